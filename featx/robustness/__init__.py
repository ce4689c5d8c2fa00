"""Robustness of a saved model: corruptions at five severities, adversarial budgets, OOD-flag rates.

``evaluate_robustness(bundle, sources, ...) -> dict`` and ``write_robustness_report(result, dir)``;
``CORRUPTIONS`` names the corruptions (:mod:`featx.robustness.corruptions`).
"""
from featx.robustness.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from featx.robustness.evaluation import evaluate_robustness
from featx.robustness.report import summary_markdown, write_robustness_report

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt", "evaluate_robustness", "summary_markdown",
           "write_robustness_report"]
