"""What every verb shares: one-line errors, the --data and --json options, printing results."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
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
        except KeyboardInterrupt:
            click.echo("interrupted: finished work was kept", err=True)
            sys.exit(130)

    return wrapper


data_option = click.option(
    "--data",
    "data",
    type=click.Path(path_type=Path),
    default=None,
    help="Dataset folder or CSV manifest (default: $PNEUMO_DATA, ./data/chest_xray, ../shared/data/chest_xray).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


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
