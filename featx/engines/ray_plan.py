"""Where the Ray engine's work goes: a resource plan made per node, checked before the run, and a
watchdog that stops a run that no longer makes progress.

Why per node: Ray places an actor or a task on ONE node, so a plan sized from the cluster's CPU
total (``ray.cluster_resources()``) can ask for actors no node can hold (2 nodes x 2 CPUs: one
3.5-CPU actor) or fill every node with actors so the decode tasks fit nowhere (the run then waits
forever; featx issue 18).

The rule this module keeps: every model actor asks for the same ``actor_cpus`` (Ray Data's actor
pool has one resource shape), chosen so that on EVERY node, however many actors Ray packs onto it
(``floor(cpus / actor_cpus)``, or its GPU count), the CPUs left are at least that node's decode
room. Decode tasks therefore always fit on a node that hosts actors, whatever placement Ray picks,
also after an actor restarts elsewhere or a node is lost. Decode tasks themselves go wherever Ray
puts them (nodes without actors decode too); the room only guarantees that they are never starved.

GPU clusters, mixed or not: with ``--device cuda`` (or ``auto`` on a cluster with a GPU) actors ask
for one GPU each and so run on GPU nodes only; CPU-only nodes then decode. CPU actors are not mixed
in: one feature set would then hold rows computed at two precisions (GPU fp16/bf16 and CPU fp32),
and Ray Data's single actor pool has one resource shape. ``--device cpu`` plans CPU actors on
every node, GPU nodes included.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from featx.errors import FeatxError

DECODE_TASK_CPUS = 0.25      # CPU asked by one decode task (single-threaded: a scheduling share)
DECODE_SHARE = 1 / 8         # decode room of a node: this share of its CPUs, at least one task's
MIN_ACTOR_CPUS = 0.5         # smallest CPU actor worth running a model in
MAX_CPU_ACTOR_CPUS = 4.0     # default: one CPU actor per 4 CPUs, each with up to 4 torch threads
GPU_ACTOR_CPUS = 1.0         # CPU asked by a GPU actor (it only feeds the GPU)
DEFAULT_STALL_TIMEOUT = 300.0  # seconds without a finished batch before a run stops
_EPS = 1e-6


class PlacementError(FeatxError):
    """The cluster's nodes cannot hold the resource plan (the run would wait forever)."""


class StallError(FeatxError):
    """A Ray run made no progress for longer than its stall timeout."""

    exit_code = 1


@dataclass(frozen=True)
class NodeInfo:
    """One alive Ray node and its total resources."""

    node_id: str
    address: str
    cpus: float
    gpus: float = 0.0

    def label(self) -> str:
        # nodes of one machine share the address: the id's start tells them apart
        return f"{self.address} [{self.node_id[:6]}]"


@dataclass(frozen=True)
class NodeShare:
    """What the plan puts on one node: at most ``actors`` model actors, and decode room kept free."""

    node: NodeInfo
    actors: int
    decode_room: float


@dataclass(frozen=True)
class ResourcePlan:
    actors: int                 # model actors in the pool (0: handcrafted only)
    actor_cpus: float           # CPUs each actor asks for
    actor_gpus: int             # GPUs each actor asks for (0 or 1)
    decode_cpus: float          # CPUs each decode task asks for
    threads: int                # torch threads per actor
    nodes: tuple[NodeShare, ...]

    @property
    def use_gpu(self) -> bool:
        return self.actor_gpus > 0

    def per_node(self) -> str:
        """One line of per-node figures: ``127.0.0.1 [51b331]: 1 CPU, up to 1 actor, 0.25 CPU decode room; ...``."""
        parts = []
        for s in self.nodes:
            gpu = f", {s.node.gpus:g} GPU" if s.node.gpus else ""
            parts.append(f"{s.node.label()}: {s.node.cpus:g} CPU{gpu}, up to {s.actors} "
                         f"actor{'s' if s.actors != 1 else ''}, {s.decode_room:g} CPU decode room")
        return "; ".join(parts)

    def describe(self) -> str:
        if not self.actors:
            return f"decode tasks of {self.decode_cpus:g} CPU on {len(self.nodes)} nodes"
        kind = f"1 GPU + {self.actor_cpus:g} CPU" if self.use_gpu else f"{self.actor_cpus:g} CPU"
        return f"{self.actors} actor{'s' if self.actors != 1 else ''} of {kind}, decode tasks of {self.decode_cpus:g} CPU ({self.per_node()})"


def nodes_from_ray(ray_nodes: Sequence[dict]) -> list[NodeInfo]:
    """The alive nodes of ``ray.nodes()``, with their total CPUs and GPUs."""
    out = []
    for n in ray_nodes:
        if not n.get("Alive", n.get("alive", False)):
            continue
        res = n.get("Resources") or {}
        out.append(NodeInfo(str(n.get("NodeID", "")), str(n.get("NodeManagerAddress", "?")),
                            float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))))
    return out


def decode_room(node: NodeInfo) -> float:
    return _floor2(max(DECODE_TASK_CPUS, DECODE_SHARE * node.cpus))


def _floor2(x: float) -> float:
    return math.floor(x * 100 + _EPS) / 100


def _packed(node: NodeInfo, per: float, gpu: bool) -> int:
    """How many actors of ``per`` CPUs Ray can pack onto ``node`` (it places by resources only)."""
    if gpu and node.gpus < 1:
        return 0
    k = int(math.floor(node.cpus / per + _EPS))
    return min(k, int(node.gpus)) if gpu else k


def _shares(nodes: Sequence[NodeInfo], per: float, gpu: bool) -> list[NodeShare] | None:
    """Per-node shares for actors of ``per`` CPUs, or None if Ray could starve a node's decode room."""
    out = []
    for node in nodes:
        k, room = _packed(node, per, gpu), decode_room(node)
        if k and node.cpus - k * per < room - _EPS:
            return None
        out.append(NodeShare(node, k, room))
    return out


def _candidates(nodes: Sequence[NodeInfo], gpu: bool) -> list[float]:
    """Actor sizes worth trying, largest first: the cap, and every ``(cpus - room) / k``."""
    top = GPU_ACTOR_CPUS if gpu else MAX_CPU_ACTOR_CPUS
    cands = {top}
    for node in nodes:
        free = node.cpus - decode_room(node)
        for k in range(1, int(free / MIN_ACTOR_CPUS) + 1):
            c = _floor2(free / k)
            if MIN_ACTOR_CPUS - _EPS <= c <= top:
                cands.add(c)
    return sorted(cands, reverse=True)


def wants_gpu(device: str, nodes: Sequence[NodeInfo]) -> bool:
    d = (device or "auto").lower()
    if d.startswith("cuda"):
        return True
    return d == "auto" and any(n.gpus >= 1 for n in nodes)


def _node_list(nodes: Sequence[NodeInfo]) -> str:
    return ", ".join(f"node {n.label()}: {n.cpus:g} CPU" + (f" {n.gpus:g} GPU" if n.gpus else "") for n in nodes) \
        or "no alive node"


def plan_nodes(nodes: Sequence[NodeInfo], workers: int | None = None, device: str = "auto",
               model: bool = True) -> ResourcePlan:
    """The resource plan for a run on ``nodes``: ``workers`` model actors (None: one per GPU, or
    one per 4 CPUs of each node), or none when ``model`` is False (handcrafted sets only).

    Raises PlacementError, one line naming what is missing, when the nodes cannot hold it."""
    nodes = list(nodes)
    if workers is not None and workers < 1:
        raise PlacementError(f"--workers must be at least 1, not {workers}")
    decode_nodes = [n for n in nodes if n.cpus >= DECODE_TASK_CPUS - _EPS]
    if not decode_nodes:
        raise PlacementError(f"a decode task needs {DECODE_TASK_CPUS:g} CPU on one node; the cluster has "
                             f"none free ({_node_list(nodes)})")
    if not model:
        return ResourcePlan(0, 0.0, 0, DECODE_TASK_CPUS, 1,
                            tuple(NodeShare(n, 0, decode_room(n)) for n in nodes))
    gpu = wants_gpu(device, nodes)
    if gpu and not any(n.gpus >= 1 for n in nodes):
        raise PlacementError(f"--device {device} needs a node with a GPU; the cluster's nodes have none "
                             f"({_node_list(nodes)})")
    valid = []                              # (per, shares) for every size Ray cannot starve decode with
    for per in _candidates(nodes, gpu):
        shares = _shares(nodes, per, gpu)
        if shares is not None and sum(s.actors for s in shares) > 0:
            valid.append((per, shares))
    if workers is None:
        if gpu:
            want = sum(int(n.gpus) for n in nodes)
        else:
            want = sum(max(1, int(n.cpus // MAX_CPU_ACTOR_CPUS)) for n in nodes
                       if n.cpus - decode_room(n) >= MIN_ACTOR_CPUS - _EPS)
        want = max(1, want)
    else:
        want = int(workers)
    for per, shares in valid:               # largest actors first
        if sum(s.actors for s in shares) >= want:
            threads = 1 if gpu else max(1, int(round(per)))
            return ResourcePlan(want, per, 1 if gpu else 0, DECODE_TASK_CPUS, threads, tuple(shares))
    best = max(valid, key=lambda v: sum(s.actors for s in v[1]), default=None)
    fit = sum(s.actors for s in best[1]) if best else 0
    per_node = "; ".join(f"node {s.node.label()}: {s.node.cpus:g} CPU" + (f" {s.node.gpus:g} GPU" if s.node.gpus else "")
                         + f" fits {s.actors}" for s in best[1]) if best else _node_list(nodes)
    shape = (f"1 GPU + >= {MIN_ACTOR_CPUS:g} CPU" if gpu else f">= {MIN_ACTOR_CPUS:g} CPU")
    asked = f"--workers {workers} needs {want} actors" if workers is not None else "the model needs 1 actor"
    raise PlacementError(f"{asked} of {shape} plus decode room (>= {DECODE_TASK_CPUS:g} CPU) on each of "
                         f"their nodes; the cluster's nodes fit {fit} ({per_node})")


def plan_cluster(ray, workers: int | None = None, device: str = "auto", model: bool = True) -> ResourcePlan:
    """:func:`plan_nodes` on the alive nodes of the connected Ray cluster."""
    return plan_nodes(nodes_from_ray(ray.nodes()), workers, device, model)


class StallWatchdog:
    """Tells how long a run has gone without progress and stops it after ``timeout`` seconds.

    The driver calls :meth:`progressed` for every result and :meth:`check` while it waits;
    :meth:`waiting_note` is the progress bar's text while nothing arrives (None: not waiting)."""

    def __init__(self, timeout: float | None, note_after: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        if timeout is not None and timeout <= 0:
            raise FeatxError(f"--stall-timeout must be a positive number of seconds, not {timeout:g}")
        self.timeout, self.note_after, self.clock = timeout, note_after, clock
        self.last = clock()

    def progressed(self) -> None:
        self.last = self.clock()

    def idle(self) -> float:
        return self.clock() - self.last

    def waiting_note(self, plan: ResourcePlan | None, free: dict | None) -> str | None:
        """``"waiting for resources 25 s: 0.25 CPU free, an actor needs 0.75 CPU"`` once nothing has
        arrived for ``note_after`` seconds, else None."""
        idle = self.idle()
        if idle < self.note_after:
            return None
        free = free or {}
        cpu, gpu = float(free.get("CPU", 0.0)), float(free.get("GPU", 0.0))
        need = []
        if plan is not None and plan.actors and cpu < plan.actor_cpus - _EPS:
            need.append(f"an actor needs {plan.actor_cpus:g} CPU")
        if plan is not None and plan.use_gpu and gpu < 1:
            need.append("an actor needs 1 GPU")
        if plan is not None and cpu < plan.decode_cpus - _EPS:
            need.append(f"a decode task needs {plan.decode_cpus:g} CPU")
        have = f"{cpu:g} CPU" + (f", {gpu:g} GPU" if plan is not None and plan.use_gpu else "") + " free"
        what = "waiting for resources" if need else "waiting for workers"
        return f"{what} {idle:.0f} s: {have}" + (", " + ", ".join(need) if need else "")

    def check(self, note: str | None = None) -> None:
        """Raise StallError once nothing has arrived for ``timeout`` seconds."""
        if self.timeout is not None and self.idle() > self.timeout:
            why = f" ({note})" if note else ""
            raise StallError(f"ray: no progress for {self.idle():.0f} s{why}; stopped (--stall-timeout "
                             f"{self.timeout:g})")
