"""``pneumo policy BUNDLE``: show or override the DICOM header policy stored in ``pneumo.json``.

Why a verb that writes the bundle rather than a per-command ``--policy`` flag: every surface (``pneumo
predict``, the Python API, the server, the DICOM node) builds its :class:`~pneumo.analysis.Analyser`
from the bundle, so an override recorded there reaches all of them at once, and it is visible where
the model is described (``pneumo.json`` → ``header_policy.overridden`` and ``header_policy.history``,
the model card). Nothing is changed silently: each change is printed and logged.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from pneumo.cli.common import emit_json, json_option, run_safely


def _parse(pairs: tuple[str, ...]) -> dict:
    """``key=value`` pairs → policy changes (``age_years=0,18``, ``refuse_lateral=false``, ``age_years=none``)."""
    from pneumo.errors import ConfigError

    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        v = value.strip()
        if key in ("modalities", "body_parts"):
            out[key] = [s for s in v.split(",") if s.strip()]
        elif key == "age_years":
            out[key] = None if v.lower() in ("none", "off", "") else v.split(",")
        elif key == "refuse_lateral":
            if v.lower() not in ("true", "false"):
                raise ConfigError(f"refuse_lateral must be true or false, got {v!r}")
            out[key] = v.lower() == "true"
        else:
            out[key] = v
    return out


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--set", "changes", multiple=True, metavar="KEY=VALUE",
              help="Override one key: modalities=CR,DX · refuse_lateral=false · body_parts=CHEST · "
                   "age_years=0,18 (or none) · age_tolerance_years=0.5. Repeatable.")
@click.option("--reset", is_flag=True, help="Back to the bundle's default policy (recorded too).")
@click.option("--note", default="", help="Why the site changed it (stored with the change).")
@json_option
@run_safely
def policy(bundle, changes, reset, note, as_json):
    """Show BUNDLE's DICOM header policy, or override it for this site (recorded in pneumo.json)."""
    from pneumo.bundle import read_meta, update_meta
    from pneumo.data.header_policy import HeaderPolicy

    meta = read_meta(bundle)
    current = HeaderPolicy.from_meta(meta)
    if changes or reset:
        new = HeaderPolicy() if reset else current.with_overrides(_parse(changes))
        history = list((meta.get("header_policy") or {}).get("history") or [])
        history.append({"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                        "change": "reset to default" if reset else _parse(changes), "note": note})
        block = {**new.to_dict(), "history": history}
        update_meta(bundle, header_policy=block)
        current = new
        if (Path(bundle) / "MODEL_CARD.md").exists():  # the card says what the bundle now applies
            from pneumo.evaluation.card import write_card

            write_card(bundle)
        if not as_json:
            click.echo(f"{bundle}/pneumo.json: header policy "
                       + ("reset to the default" if reset else f"overridden ({', '.join(new.overridden)})")
                       + "; every surface reading this bundle now applies it")
    if as_json:
        emit_json(current.to_dict())
        return
    click.echo(json.dumps(current.to_dict(), indent=2))
