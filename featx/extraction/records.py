"""One batch of a run -> one cache journal record (featx.cache.BatchRecord), whichever engine ran it."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from featx import cache as C
from featx.errors import FeatxError

log = logging.getLogger("featx")


@dataclass
class BatchOutputs:
    """What an engine got back for one batch of WorkItems (featx.extraction.decode).

    ``deep[g]`` holds backbone g's outputs ``{tap: float32 [rows, d]}`` for the decoded items that
    need it (``g in item.groups``), in the order of ``decoded``; ``hand[h]`` the vectors of
    handcrafted set h for the decoded items that need it, in the same order.
    """

    decoded: list = field(default_factory=list)           # WorkItems decoded fine
    errors: list = field(default_factory=list)            # (WorkItem, reason) that failed to decode
    deep: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    hand: dict[int, list[np.ndarray]] = field(default_factory=dict)


def batch_record(out: BatchOutputs, plans, hand) -> C.BatchRecord:
    """The journal record of one batch: its samples, one SetRows per set it computed, its decode
    failures (each also logged as a warning). Raises FeatxError on non-finite features."""
    rec = C.BatchRecord()
    for item, reason in out.errors:
        rec.failures.append((item.sample.path, reason, "decode"))
        log.warning("%s: %s", item.sample.path, reason)
    for item in out.decoded:
        rec.add_sample(item.sample)
    for g, plan in enumerate(plans):
        rows = [item for item in out.decoded if g in item.groups]
        if not rows:
            continue
        feats = out.deep[g]
        ids = [item.sample.id for item in rows]
        for dset in plan.sets:
            X = np.concatenate([feats[t] for t in dset.taps], axis=1)
            check_finite(X, dset.name, [item.sample.path for item in rows])
            rec.sets.append(C.SetRows(dset.name, dset.config, "deep", ids, X, dset.request))
    for h, hs in enumerate(hand):
        rows = [item for item in out.decoded if h in item.hand]
        if rows:
            rec.sets.append(C.SetRows(hs.name, hs.config, "handcrafted", [item.sample.id for item in rows],
                                      np.stack(out.hand[h])))
    return rec


def check_finite(X: np.ndarray, name: str, paths: list[str]) -> None:
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        first = paths[int(np.flatnonzero(bad)[0])]
        raise FeatxError(f"feature set {name!r} produced non-finite values for {int(bad.sum())} images "
                         f"(first: {first}); try --precision fp32")


class RunBar:
    """The run's progress bar (tqdm on stderr): one rate (tqdm's images/s), the failures so far,
    and a status ("loading model", "decoding") shown from the start, before the first batch."""

    def __init__(self, total: int, label: str, enabled: bool, status: str = "loading model"):
        from tqdm import tqdm
        self.failed = 0
        self.bar = tqdm(total=total, unit="img", disable=not enabled, dynamic_ncols=True,
                        desc=f"extract [{label}]", postfix=status)  # drawn now, status included

    def status(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=True)

    def relabel(self, label: str, total: int | None = None) -> None:
        if total is not None:
            self.bar.total = total
        self.bar.set_description_str(f"extract [{label}]", refresh=True)

    def advance(self, n: int, failed: int = 0) -> None:
        self.failed += failed
        self.bar.set_postfix_str(f"{self.failed} failed" if self.failed else "", refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()
