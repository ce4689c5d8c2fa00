"""What every command shares: the group that turns every error into one line, logging to stderr,
option types with declared ranges, and small parsing helpers."""
from __future__ import annotations

import difflib
import logging
import math
import sys
import traceback

import click

from featx.errors import FeatxError

DEBUG_HINT = "rerun with --debug for the traceback"


class _LineFormatter(logging.Formatter):
    def format(self, record):
        level = {"WARNING": "warning", "ERROR": "error", "INFO": "info"}.get(record.levelname, record.levelname.lower())
        return f"featx: {level}: {record.getMessage()}"


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """featx's log records as ``featx: <level>: <message>`` lines on stderr; -v shows DEBUG (e.g. the
    list of files with duplicate content)."""
    log = logging.getLogger("featx")
    log.handlers[:] = []
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(_LineFormatter())
    log.addHandler(h)
    log.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def usage_error_line(e: click.ClickException) -> str:
    """``featx: error: <click's message>`` on one line, pointing at the command's --help."""
    msg = _one_line(e.format_message())
    msg = msg[:1].lower() + msg[1:]
    ctx = getattr(e, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"featx: error: {msg}{where}"


class FeatxGroup(click.Group):
    """A click group whose errors are one line each.

    Usage errors (bad option values, unknown commands) and :class:`FeatxError` exit with code 2
    (or the error's own exit code); anything unexpected becomes one line with a hint to rerun with
    ``--debug`` and exit code 1. With ``--debug`` the traceback is printed as well.
    """

    debug = False

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            ctx.fail(f"no command {name!r}; {hint}commands: {', '.join(self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        FeatxGroup.debug = False
        try:
            rv = super().main(args, "featx", complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            self._traceback()
            click.echo(usage_error_line(e), err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("featx: interrupted", err=True)
            sys.exit(130)
        except FeatxError as e:
            self._traceback()
            click.echo(f"featx: error: {_one_line(e)}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("featx: interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - the last line of defence: one line, never a traceback
            self._traceback()
            lines = [line for line in str(e).splitlines() if line.strip()]
            # a message that embeds tracebacks (sklearn's "All the fits failed") ends with the cause
            detail = (lines[-1].strip() if "Traceback" in str(e) else _one_line(e)) or "(no message)"
            detail = detail if len(detail) <= 300 else detail[:297] + "..."
            hint = "" if FeatxGroup.debug else f"; {DEBUG_HINT}"
            click.echo(f"featx: error: unexpected {type(e).__name__}: {detail}{hint}", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    @staticmethod
    def _traceback():
        if FeatxGroup.debug:
            traceback.print_exc(file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# option types: every numeric option declares its range; every error names what is accepted


class SuggestChoice(click.Choice):
    """click.Choice whose error suggests the closest choice (``--head svmm`` -> did you mean 'svm'?)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() in self.choices:
            return value.strip().lower()
        if value in self.choices:
            return value
        close = difflib.get_close_matches(str(value).lower(), [str(c) for c in self.choices], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        self.fail(f"{value!r} is not accepted; {hint}choose from {', '.join(map(str, self.choices))}", param, ctx)


class RegistryChoice(SuggestChoice):
    """A choice among the names of a featx registry constant, ``"module:NAME"``, imported when first
    needed (--help, or a value other than ``default``), so that parsing a command line does not
    import torch or pandas before the command can show that it started. The default is one of the
    names (tests/test_cli_options.py checks every registry default)."""

    def __init__(self, where: str, default: str | None = None):
        self.where, self.default, self._names = where, default, None
        self.case_sensitive = True

    @property
    def choices(self):
        if self._names is None:
            import importlib

            module, name = self.where.split(":")
            self._names = tuple(getattr(importlib.import_module(module), name))
        return self._names

    def convert(self, value, param, ctx):
        if value == self.default:
            return value
        return super().convert(value, param, ctx)


class WholeNumber(click.ParamType):
    """An integer >= ``minimum``; ``also`` lists extra accepted values (e.g. -1 = all cores)."""

    name = "integer"

    def __init__(self, minimum: int, meaning: str = "", also: dict[int, str] | None = None):
        self.minimum, self.meaning, self.also = minimum, meaning, also or {}

    def describe(self) -> str:
        extra = "".join(f", or {k} ({v})" for k, v in self.also.items())
        return f"a whole number >= {self.minimum}{f' ({self.meaning})' if self.meaning else ''}{extra}"

    def get_metavar(self, param, ctx=None):
        return f"INTEGER>={self.minimum}" + "".join(f"|{k}" for k in self.also)

    def convert(self, value, param, ctx):
        try:
            number = int(value) if not isinstance(value, float) or value.is_integer() else None
        except (TypeError, ValueError):
            number = None
        if number is None or (number < self.minimum and number not in self.also):
            self.fail(f"{value}: needs {self.describe()}", param, ctx)
        return number


class FiniteNumber(click.ParamType):
    """A finite float >= ``minimum`` (not NaN, not infinite), at most ``maximum`` if given."""

    name = "number"

    def __init__(self, minimum: float, maximum: float | None = None, meaning: str = ""):
        self.minimum, self.maximum, self.meaning = minimum, maximum, meaning

    def get_metavar(self, param, ctx=None):
        return f"FLOAT>={self.minimum:g}"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        upper = "" if self.maximum is None else f" and <= {self.maximum:g}"
        if not math.isfinite(number) or number < self.minimum or (self.maximum is not None and number > self.maximum):
            self.fail(f"{value}: needs a finite number >= {self.minimum:g}{upper}"
                      f"{f' ({self.meaning})' if self.meaning else ''}", param, ctx)
        return number


class PcaAmount(click.ParamType):
    """--pca: a component count (a whole number >= 1; the library clips it to the data) or a variance
    fraction in (0, 1); "none"/"0"/"off" switch PCA off."""

    name = "pca"

    def get_metavar(self, param, ctx=None):
        return "N|FRACTION"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
            return None
        text = str(value).strip().lower()
        if text in ("", "none", "0", "off"):
            return None
        accepted = "a number of components (a whole number >= 1, e.g. 128) or a variance fraction in (0, 1) (e.g. 0.95)"
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number <= 0 or (number >= 1 and not number.is_integer()):
            self.fail(f"{value}: needs {accepted}", param, ctx)
        return number if number < 1 else int(number)


def split_list(values) -> list[str]:
    """Accept repeated options and comma-separated values alike."""
    out = []
    for v in values or ():
        out.extend(x.strip() for x in str(v).split(",") if x.strip())
    return out


def is_cache(path: str) -> bool:
    """An existing HDF5 file written by featx (not an image source)."""
    try:
        import h5py

        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            return "featx_layout_version" in f.attrs
    except (OSError, ValueError):
        return False


def require_cache(path: str) -> None:
    """Stop with what to do next if ``path`` (a folder, an image...) is not a featx cache. An HDF5
    file passes: the cache layer opens it and names what is wrong with it, if anything."""
    if is_cache(path) or _looks_like_hdf5(path):
        return
    raise FeatxError(f"not a feature cache; a cache is made by `featx extract {path} -o CACHE.h5`", path=path)


def _looks_like_hdf5(path: str) -> bool:
    from featx.check import HDF5_SIGNATURE
    from featx.safeio import not_regular_reason

    if not_regular_reason(path):
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


def require_labels(path: str) -> None:
    """Stop with how to label the images if no sample of the cache has a class."""
    from featx.cache import read_state

    st = read_state(path)
    if st.ids and not any(st.labels):
        raise FeatxError(
            "the cache has no labels (every sample's class is unknown); label the images by class "
            "subfolders (FOLDER/<class>/image.png) or with a CSV manifest that has a `label` column, "
            "then extract them again with `featx extract`", path=path)
