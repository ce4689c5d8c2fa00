"""The decoding side of a run (worker processes locally, Ray tasks on a cluster): one sample ->
its model inputs for each backbone that needs it and its handcrafted vectors."""
from __future__ import annotations

import signal
from dataclasses import dataclass

import numpy as np

from featx.errors import FeatxError
from featx.sources import Sample


@dataclass(frozen=True)
class WorkItem:
    """A sample still to compute, and what it still needs."""

    sample: Sample
    groups: tuple[int, ...]      # backbones (plan indices) whose sets lack it
    hand: tuple[int, ...]        # handcrafted sets (indices) that lack it


class DecodeDataset:
    """Decodes one sample, preprocesses it for each backbone that needs it, computes handcrafted sets.

    ``ds[i]`` is ``{"i": i, "error": str | None, "tensors": {plan: (3, H, W) tensor},
    "hand": {hand index: float32 vector}}``; a file that fails gives its reason in ``error``.
    """

    def __init__(self, items, read_opts, preprocs, hand_specs):
        self.items = items
        self.read_opts = read_opts      # one ReadOptions per backbone, plus one for handcrafted
        self.preprocs = preprocs
        self.hand_specs = hand_specs

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from featx.backbones.preprocess import preprocess
        item = self.items[i]
        out = {"i": i, "error": None, "tensors": {}, "hand": {}}
        try:
            decoded: dict = {}

            def image(opts):
                if opts not in decoded:
                    decoded[opts] = item.sample.load(opts)
                return decoded[opts]

            for g in item.groups:
                out["tensors"][g] = preprocess(image(self.read_opts[g]), self.preprocs[g])
            if item.hand:
                from featx.handcrafted import compute_all
                specs = [self.hand_specs[h] for h in item.hand]
                vecs = compute_all(specs, image(self.read_opts[-1]))  # gray conversion once
                for h, spec in zip(item.hand, specs):
                    out["hand"][h] = np.asarray(vecs[spec.name], np.float32)
        except FeatxError as e:
            out["error"] = e.reason
        except Exception as e:  # a hostile file must not stop the run
            out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return out


def decode_dataset(items, plans, hand, cfg) -> DecodeDataset:
    """The DecodeDataset of a run's items, plans (featx.extraction.engine.DeepPlan) and handcrafted sets."""
    preprocs = [p.backbone.preprocess for p in plans]
    read_opts = [cfg.read_options(p.resize_size) for p in preprocs] + [cfg.read_options(None)]
    return DecodeDataset(items, read_opts, preprocs, [h.spec for h in hand])


def stack_inputs(batch: list[dict], channels_last: bool = False) -> dict:
    """DataLoader collate, run in the decode worker: each backbone's model inputs of the batch's
    good samples stacked into one (n, 3, H, W) tensor (``{"rows": [outputs without tensors],
    "x": {plan: tensor}}``, rows in batch order, a plan's tensor in the order of the rows that
    have it). In a worker the tensor is allocated in shared memory, so it reaches the model's
    process without a copy; with ``channels_last`` it is laid out as the model reads it."""
    import torch
    from torch.utils.data import get_worker_info
    x = {}
    groups = sorted({g for o in batch if not o["error"] for g in o["tensors"]})
    for g in groups:
        rows = [o["tensors"][g] for o in batch if not o["error"] and g in o["tensors"]]
        c, h, w = rows[0].shape
        if get_worker_info() is not None:
            storage = torch.UntypedStorage._new_shared(len(rows) * c * h * w * rows[0].element_size())
            buf = rows[0].new_empty(0).set_(storage)
        else:
            buf = rows[0].new_empty(len(rows) * c * h * w)
        out = (buf.view(len(rows), h, w, c).permute(0, 3, 1, 2) if channels_last
               else buf.view(len(rows), c, h, w))
        for i, r in enumerate(rows):
            out[i].copy_(r)
        x[g] = out
    return {"rows": [{k: v for k, v in o.items() if k != "tensors"} for o in batch], "x": x}


def init_decode_worker(_):
    """A DataLoader worker: one torch thread, Ctrl-C left to the main process."""
    import threading

    import torch
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    # After a Ctrl-C the main process stops reading mid-batch; multiprocessing's fd-sharing
    # thread in this worker then hits a reset connection. That is the expected end, not an error.
    default_hook = threading.excepthook

    def quiet_hook(args):
        if not issubclass(args.exc_type, (ConnectionResetError, BrokenPipeError, EOFError)):
            default_hook(args)
    threading.excepthook = quiet_hook
