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


def as_list(batch):
    """DataLoader collate: keep the batch a list of DecodeDataset outputs."""
    return batch


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
