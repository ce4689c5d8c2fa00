"""Guards for the files featx reads and writes.

* :func:`regular_file` / :func:`open_regular`: featx reads only regular files. A FIFO, device,
  socket or folder where a file is expected is refused with one line, found by ``os.stat`` before
  anything is opened (opening a FIFO for reading blocks until a writer appears).
* :func:`check_output`: an output path must not be one of the run's inputs (or a file inside an
  input folder), and must not overwrite an existing file of another kind (a CSV over an HDF5
  cache, a model over a cache...) unless forced.
* :func:`atomic_write`: write a file through a temporary file in the same folder, fsync it and
  rename it into place, so readers see the old file or the complete new one, never half of it.
"""
from __future__ import annotations

import os
import re
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

from featx.errors import FeatxError

# kind of file -> how its content starts (None: any content)
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "cache": (b"\x89HDF\r\n\x1a\n",),
    "model": (b"\x80", b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ"),   # pickle / zlib / gzip / bz2 / xz (joblib)
    "image": (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF8", b"RIFF"),
    "npz": (b"PK\x03\x04",),
}
_TEXT_KINDS = ("csv", "json", "text", "html", "markdown")


def file_type_name(mode: int) -> str:
    """A word for what ``st_mode`` describes (``"FIFO"``, ``"directory"``, ...)."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symbolic link")):
        if test(mode):
            return name
    return "special file"


def not_regular_reason(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a file (missing, a FIFO, a folder, ...), or None if it can."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    except ValueError as e:  # embedded NUL byte
        return f"not a usable path ({e})"
    if not stat.S_ISREG(st.st_mode):
        return f"is a {file_type_name(st.st_mode)}, not a regular file"
    return None


def regular_file(path: str | os.PathLike, what: str = "file", error: type[FeatxError] = FeatxError) -> Path:
    """``path`` as a Path if it is a regular file; otherwise raise ``error`` naming it and why.

    Never opens the file, so a FIFO cannot block."""
    reason = not_regular_reason(path)
    if reason is not None:
        raise error(f"{what} {reason}", path)
    return Path(path)


def open_regular(path: str | os.PathLike, mode: str = "rb", what: str = "file",
                 error: type[FeatxError] = FeatxError, **kwargs):
    """``open(path, mode)`` for a regular file only; anything else raises ``error`` (one line).

    The file is opened with O_NONBLOCK and checked again with fstat, so a path swapped for a FIFO
    between the check and the open still cannot block."""
    regular_file(path, what, error)
    if "r" not in mode or "+" in mode:
        return open(path, mode, **kwargs)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise error(f"cannot read {what} ({e.strerror or e})", path) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise error(f"{what} is a {file_type_name(st.st_mode)}, not a regular file", path)
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return open(fd, mode, **kwargs)


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: Path, folder: Path) -> bool:
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))
    except (OSError, ValueError):
        return False


def kind_of_file(path: str | os.PathLike) -> str | None:
    """The kind of an existing file by its first bytes: cache, model, image, npz; None if unknown."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            head = f.read(132)
    except (OSError, ValueError):
        return None
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"PK\x03\x04"):  # a zip: a skops model bundle, or an npz
        try:
            with zipfile.ZipFile(path) as zf:
                if "schema.json" in zf.namelist():
                    return "model"
        except (OSError, zipfile.BadZipFile):
            pass
    for kind, sigs in _SIGNATURES.items():
        if any(head.startswith(s) for s in sigs):
            return kind
    return None


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), *, kind: str,
                 force: bool = False) -> Path:
    """Refuse an output path that would destroy something; returns it as a Path.

    ``kind`` is what will be written there: ``"cache"``, ``"model"``, ``"csv"``, ``"json"``,
    ``"text"``, ``"html"``... Refused (FeatxError, exit code 2), ``force`` or not: ``out`` is one
    of ``inputs`` (the same file, however named) or a file inside an input folder, or ``out`` is a
    folder or a special file (FIFO, device). Refused unless ``force``: ``out`` exists and holds a
    different kind of file (an HDF5 cache, a model bundle, an image, npz or DICOM where a CSV, a
    model or a cache should go). An existing file of the same kind (a cache to extend, a model to
    replace) is accepted.
    """
    out = Path(out)
    for src in inputs:
        src = Path(src)
        try:
            is_dir = src.is_dir()
        except (OSError, ValueError):
            continue
        if (out.exists() and _same(out, src)) or (not out.exists() and os.path.realpath(out) == os.path.realpath(src)):
            raise FeatxError(f"output is the input {src}; choose another output path", out)
        if is_dir and _inside(out, src):
            raise FeatxError(f"output is inside the input folder {src} (it would be read as an input); "
                             "choose another output path", out)
    try:
        st = os.stat(out)
    except FileNotFoundError:
        return out
    except (OSError, ValueError) as e:
        raise FeatxError(f"cannot use as output ({getattr(e, 'strerror', None) or e})", out) from None
    if not stat.S_ISREG(st.st_mode):
        raise FeatxError(f"output is a {file_type_name(st.st_mode)}, not a regular file", out)
    existing = kind_of_file(out)
    if st.st_size == 0 or force:
        return out
    if kind in _TEXT_KINDS:
        clash = existing is not None
    else:
        clash = existing != kind
    if clash:
        what = {"cache": "an HDF5 file (a featx cache?)", "model": "a model bundle", "image": "an image",
                "npz": "an npz archive", "dicom": "a DICOM file", None: "a file of another kind"}[existing]
        raise FeatxError(f"output already exists and is {what}, not a {kind} file; refusing to overwrite "
                         "it (choose another path, or --force)", out)
    return out


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Yield a file object writing to a temporary file beside ``path``; on success it is flushed,
    fsynced and renamed over ``path`` (then the folder is fsynced). On error the temporary file is
    removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".featx-tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb") as fh:
        fh.write(text.encode(encoding))


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder so a rename inside it survives a power cut (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LockFileBusy(Exception):
    """Another process holds the lock file."""


class ExclusiveLockFile:
    """An exclusive lock held through a file that exists only while it is held.

    ``acquire`` creates ``path``, locks it (fcntl.flock, released by the kernel if the process
    dies) and checks that the file it locked is still the one at ``path`` (another process may
    have removed it in between); ``release`` removes the file, then unlocks it. So no lock file
    outlives a run, and two processes never both believe they hold the lock. ``acquire()``
    raises LockFileBusy when another process holds it; ``acquire(wait=True)`` waits for it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, wait: bool = False) -> None:
        import fcntl
        for _ in range(100):
            reason = not_regular_reason(self.path)
            if reason is not None and reason != "does not exist":
                raise FeatxError(f"lock file {reason}", self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NONBLOCK", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockFileBusy(str(self.path)) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)  # the holder removed it as we locked it: lock the new one
        raise LockFileBusy(str(self.path))

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


@contextmanager
def sigint_deferred():
    """Hold back Ctrl-C (SIGINT) until the block is done, then raise it: for a replace that must finish."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    try:
        old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got and callable(old):
            old(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt here
        elif got and old == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)


def io_reason(e: BaseException) -> str:
    """One line saying why a write failed: the OS's words when HDF5 buried them in a long message."""
    if getattr(e, "strerror", None):
        return str(e.strerror)
    text = " ".join(str(e).split())
    m = re.search(r"error message = '([^']+)'", text)
    return m.group(1) if m else (text or type(e).__name__)
