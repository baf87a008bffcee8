"""``pneumo build RECIPE --out DIR``: the whole bundle-making workflow (what ``make model`` runs)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from pneumo.cli.common import data_option, emit_json, json_option, quiet_training_output, run_safely


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder to write (replaced whole).")
@data_option
@click.option("--runs", type=click.Path(path_type=Path), default=None,
              help="Folder for the members' run directories (default runs/NAME); finished members are reused.")
@click.option("--external", type=click.Path(path_type=Path), default=None,
              help="Other-source images for the chest-X-ray gate (default $PNEUMO_EXTERNAL; see docs/inference.md).")
@click.option("--no-eval", is_flag=True, help="Skip the validation report (the card then has no report figures).")
@json_option
@click.argument("overrides", nargs=-1)
@run_safely
def build(recipe, out, data, runs, external, no_eval, as_json, overrides):
    """Train every member of RECIPE, combine them, fit the gate, calibrate, export, evaluate, write the card.

    OVERRIDES (key=value) apply to every member, e.g. train.epochs=2 data.limit=200 for a quick try.
    """
    from pneumo.bundle import read_meta
    from pneumo.workflows.bundle import make_bundle

    # Lightning's progress bars go to stderr; stdout stays for the result
    with quiet_training_output(), contextlib.redirect_stdout(sys.stderr):
        path = make_bundle(recipe, out, data=data, runs=runs, overrides=overrides, evaluate=not no_eval,
                           external=external)
    meta = read_meta(path)
    op, vm = meta["operating_point"], meta.get("validation_metrics", {})
    result = {"bundle": str(path), "architecture": meta["architecture"]["name"], "operating_point": op,
              "val_auroc": vm.get("auroc"), "calibration": meta.get("calibration", {}).get("method"),
              "prevalence": meta.get("calibration", {}).get("prevalence")}
    if as_json:
        emit_json(result)
        return
    click.echo(f"bundle: {path}")
    click.echo(f"  val AUROC {vm.get('auroc'):.4f}; operating point logit {op['logit']:.3f} "
               f"(val sensitivity {op.get('val_sensitivity', float('nan')):.3f}, "
               f"specificity {op.get('val_specificity', float('nan')):.3f})")
