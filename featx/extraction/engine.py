"""Engines: what runs the items of an extraction, here (LocalEngine) or on Ray (featx.engines.ray).

``featx.extraction.extract`` does what every engine shares (checking, scanning, locking, naming,
reuse, metadata updates, the commit); an engine supplies the two things that differ: the runtime
(device and precision, resolved where the model runs) and ``execute(job)``, which computes the
job's items, appends their records to the cache's journal and returns an :class:`EngineResult`.
"""
from __future__ import annotations

import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from featx import cache as C
from featx.extraction.decode import decode_dataset, init_decode_worker, stack_inputs
from featx.extraction.options import ExtractConfig
from featx.extraction.records import BatchOutputs, RunBar, batch_record

log = logging.getLogger("featx")


@dataclass
class DeepPlan:
    """One backbone of a run: the prepared model (featx.backbones.inference.PreparedModel) and
    the sets (featx.setconfig.DeepSet) it fills."""

    prepared: object
    sets: list

    @property
    def backbone(self):
        return self.prepared.backbone


@dataclass
class ExtractJob:
    """The items still to compute and everything needed to compute them."""

    items: list                    # featx.extraction.decode.WorkItem
    plans: list[DeepPlan]
    hand: list                     # featx.setconfig.HandSet
    cfg: ExtractConfig
    runtime: object                # featx.runtime.Runtime, or None without backbones
    cache: Path
    bar: RunBar


@dataclass
class EngineResult:
    ok: int = 0                                         # samples whose rows are in the journal
    failures: list[tuple[str, str, str]] = field(default_factory=list)   # (path, reason, "decode")
    interrupted: bool = False
    runtime: str | None = None                          # where it ran, when the engine knows better
    worker_pids: list[int] = field(default_factory=list)


@runtime_checkable
class Engine(Protocol):
    name: str

    def check(self, cfg: ExtractConfig) -> None:
        """Raise a FeatxError if this engine cannot run ``cfg`` (before any work)."""

    def runtime(self, cfg: ExtractConfig):
        """The featx.runtime.Runtime the models will run with."""

    def execute(self, job: ExtractJob) -> EngineResult:
        """Compute the job's items into the cache's journal (not committed)."""


class LocalEngine:
    """Runs the batches on this machine: DataLoader worker processes feed the model here."""

    name = "local"

    def check(self, cfg: ExtractConfig) -> None:
        pass

    def runtime(self, cfg: ExtractConfig):
        from featx.runtime import make_runtime
        return make_runtime(cfg.device, cfg.precision)

    def execute(self, job: ExtractJob) -> EngineResult:
        from torch.utils.data import DataLoader

        from featx.backbones.inference import run_model
        from featx.runtime import configure_threads, usable_cpus

        cfg, plans, items = job.cfg, job.plans, job.items
        workers = cfg.workers if cfg.workers is not None else usable_cpus()
        if plans:
            configure_threads()
        on_cuda = job.runtime is not None and job.runtime.device_type == "cuda"
        channels_last = bool(plans) and job.runtime.channels_last
        # Decoding runs in one worker process per core, the model on every core in this one: on
        # small images the decoders mostly wait, on large ones (decode-bound) both cores decode
        # while the model takes its share. Workers stack each batch in shared memory, laid out
        # as the model reads it; on CUDA the DataLoader pins it on its own thread, ahead of the
        # GPU, and run_model copies it asynchronously.
        loader = DataLoader(decode_dataset(items, plans, job.hand, cfg), batch_size=cfg.batch_size, shuffle=False,
                            num_workers=workers, collate_fn=functools.partial(stack_inputs, channels_last=channels_last),
                            pin_memory=on_cuda, worker_init_fn=init_decode_worker if workers else None,
                            persistent_workers=False, prefetch_factor=4 if workers else None)
        journal = C.Journal(job.cache)
        result = EngineResult()
        writer = ThreadPoolExecutor(1, thread_name_prefix="featx-journal")
        pending = None  # (future, rows) of the journal write in flight

        def flush():
            """Wait for the write in flight; its rows count as done only once they are on disk."""
            nonlocal pending
            if pending is not None:
                fut, count = pending
                pending = None
                fut.result()
                result.ok += count
        job.bar.status("decoding")
        try:
            for batch in loader:
                pairs = [(items[o["i"]], o) for o in batch["rows"]]
                good = [(item, o) for item, o in pairs if not o["error"]]
                out = BatchOutputs(decoded=[item for item, _ in good],
                                   errors=[(item, o["error"]) for item, o in pairs if o["error"]])
                for g, plan in enumerate(plans):
                    if g in batch["x"]:
                        out.deep[g] = run_model(plan.prepared.model, batch["x"][g], job.runtime)
                for h in range(len(job.hand)):
                    out.hand[h] = [o["hand"][h] for item, o in good if h in item.hand]
                rec = batch_record(out, plans, job.hand)
                result.failures.extend(rec.failures)
                # journal writes (npz + fsync) run on a writer thread, off the model's path; at most
                # one is in flight, so an error surfaces at the next batch and memory stays bounded
                flush()
                pending = (writer.submit(journal.append, rec), len(out.decoded))
                job.bar.advance(len(pairs), failed=len(out.errors))
        except KeyboardInterrupt:
            result.interrupted = True
            log.warning("interrupted: saving what was computed")
        finally:
            job.bar.close()
            try:
                flush()
            except KeyboardInterrupt:
                result.interrupted = True
            finally:
                writer.shutdown(wait=True)
        return result

