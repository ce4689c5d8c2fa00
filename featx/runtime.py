"""Device and numeric precision: what runs where, chosen once per run and recorded.

``--device auto`` picks cuda > mps > cpu. ``--precision auto`` uses reduced precision only where
the hardware runs it natively: bf16 on CPUs with AVX512-BF16 or AMX, bf16 on CUDA GPUs that
support it (fp16 otherwise), fp32 everywhere else. ``fp32`` is always exact.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from featx.errors import FeatxError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Runtime:
    device: str          # cpu | cuda | cuda:N | mps
    precision: str       # fp32 | bf16 | fp16 (resolved)
    channels_last: bool

    @property
    def device_type(self) -> str:
        return self.device.split(":", 1)[0]

    @property
    def autocast_dtype(self):
        import torch
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def describe(self) -> str:
        return f"{self.device} {self.precision}" + (" channels_last" if self.channels_last else "")


def choose_device(device: str = "auto") -> str:
    import torch
    if device not in DEVICES and not device.startswith("cuda:"):
        raise FeatxError(f"unknown device {device!r} ({', '.join(DEVICES)})")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FeatxError(f"device {device!r} asked for, but torch sees no CUDA GPU (use --device auto or cpu)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise FeatxError("device 'mps' asked for, but this torch build or machine has no MPS")
    return device


def choose_precision(precision: str, device: str) -> str:
    import torch
    if precision not in PRECISIONS:
        raise FeatxError(f"unknown precision {precision!r} ({', '.join(PRECISIONS)})")
    kind = device.split(":", 1)[0]
    if precision == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if kind == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if precision == "fp16" and kind == "cpu":
        raise FeatxError("fp16 is not supported on the CPU; use bf16 or fp32")
    return precision


def make_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    dev = choose_device(device)
    prec = choose_precision(precision, dev)
    # channels_last pays on CPU (oneDNN) and on CUDA tensor cores with reduced precision.
    return Runtime(dev, prec, channels_last=dev.split(":", 1)[0] in ("cpu", "cuda"))


def configure_threads() -> None:
    """The model gets every usable core for intra-op work and one inter-op thread; decoding
    workers (one per core, see featx.extraction.engine) run one thread each and share the cores
    with it: on small images they mostly wait, on large ones decoding needs every core."""
    import torch
    torch.set_num_threads(usable_cpus())
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process (it can be set once, before any parallel work)


def featx_cache_dir() -> Path:
    """Where featx keeps machine-local caches: $FEATX_CACHE_DIR, else $XDG_CACHE_HOME/featx,
    else ~/.cache/featx."""
    if os.environ.get("FEATX_CACHE_DIR"):
        return Path(os.environ["FEATX_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "featx"


def use_inductor_cache() -> Path:
    """Point inductor's on-disk caches (FX graph cache, compiled kernels) at
    ``featx_cache_dir()/inductor`` unless TORCHINDUCTOR_CACHE_DIR is already set, so a second run
    of the same backbone loads its compiled graph instead of compiling it again. Returns the dir.
    (torch writes its own default into the variable the first time it looks, so that value counts
    as unset.)"""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not current or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        path = featx_cache_dir() / "inductor"
        path.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
