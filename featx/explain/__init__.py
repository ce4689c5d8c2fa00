"""Where a model looks, and whether the map is faithful: ``featx explain``.

Modules: ``mirror`` (a fitted pipeline in torch: :class:`TorchHead`, :class:`NotMirrorable`),
``model`` (:class:`DifferentiableModel` image -> class scores, :class:`ImageScorer` the exact
sklearn path, :func:`prepare_backbones`), ``methods`` (Grad-CAM, integrated gradients, occlusion
via captum), ``faithfulness`` (deletion metric, model-randomisation check), ``attribution``
(per-feature-set drop-set attribution), ``render`` (overlays, gallery), ``run`` (:func:`explain`).
"""
from featx.explain.attribution import drop_set_attribution
from featx.explain.mirror import NotMirrorable, TorchHead
from featx.explain.model import DifferentiableModel, ImageScorer, prepare_backbones
from featx.explain.run import ExplainResult, explain

__all__ = ["DifferentiableModel", "ExplainResult", "ImageScorer", "NotMirrorable", "TorchHead",
           "drop_set_attribution", "explain", "prepare_backbones"]
