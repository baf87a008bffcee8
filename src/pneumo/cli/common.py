"""What every verb shares: one-line errors, the --data and --json options, printing results."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from pneumo.errors import PneumoError


def run_safely(fn: Callable) -> Callable:
    """Turn a :class:`PneumoError` into one line on stderr and exit status 2; Ctrl-C into 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PneumoError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:  # a file the user named cannot be read or written (permissions, disk full, ...)
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: finished work was kept", err=True)
            sys.exit(130)

    return wrapper


LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning")


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """pneumo's own warnings as one line: no file path, no quoted source line."""
    return f"warning: {message}\n"


@contextlib.contextmanager
def quiet_training_output() -> Iterator[None]:
    """While training, stderr holds progress and pneumo's own messages only: Lightning's INFO lines
    (hardware summary, the litlogger advert, "`Trainer.fit` stopped") are dropped, and so are other
    libraries' warnings (deprecations inside Lightning/torch a user cannot act on), unless
    ``-W``/``$PYTHONWARNINGS`` asks for warnings; pneumo's own warnings print as one line. Everything
    is restored on exit (the CLI also runs in-process, e.g. under tests)."""
    import lightning  # noqa: F401  (its import sets the logger levels overridden here)

    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    fmt = warnings.formatwarning
    with warnings.catch_warnings():
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        if not sys.warnoptions:
            warnings.filterwarnings("ignore")
            warnings.filterwarnings("default", module=r"pneumo(\.|$)")  # checked first: pneumo's own
            warnings.formatwarning = _format_warning
        try:
            yield
        finally:
            warnings.formatwarning = fmt
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


data_option = click.option(
    "--data",
    "data",
    type=click.Path(path_type=Path),
    default=None,
    help="Dataset folder or CSV manifest (default: $PNEUMO_DATA, ./data/chest_xray, ../shared/data/chest_xray, "
         "tried from here and from the pneumo checkout).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def onnx_file_options(fn: Callable) -> Callable:
    """``--int8`` / ``--onnx-file``: which of the bundle's ONNX models answers (predict, serve)."""
    fn = click.option("--onnx-file", default=None, metavar="NAME|PATH",
                      help="ONNX model to run: a file in the bundle (model.int8.onnx) or an absolute path.")(fn)
    return click.option("--int8", is_flag=True,
                        help="Run the bundle's int8 model (model.int8.onnx). Smaller, not faster for the shipped "
                             "model on the CPUs measured; `pneumo bench` says whether it pays on yours.")(fn)


def choose_onnx(backend: str, int8: bool, onnx_file: str | None) -> tuple[str, str | None]:
    """(backend, onnx file) from the options; asking for an ONNX file implies the ONNX backend."""
    from pneumo.errors import ConfigError

    if int8 and onnx_file:
        raise ConfigError("give either --int8 or --onnx-file, not both")
    onnx_file = "model.int8.onnx" if int8 else onnx_file
    if onnx_file and backend == "torch":
        raise ConfigError(f"--backend torch cannot run an ONNX file ({onnx_file})")
    return ("onnx" if onnx_file else backend), onnx_file


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=_default))


def _default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
