"""``pneumo train``: a YAML config (+ key=value overrides) → a run directory with a model bundle."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from pneumo.cli.common import data_option, emit_json, json_option, quiet_training_output, run_safely


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=click.Path(path_type=Path), default=None,
              help="YAML config (see configs/); not needed with --resume.")
@data_option
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory (default runs/NAME-TIME).")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue an interrupted run from its last epoch checkpoint.")
@click.option("--weights-only", is_flag=True,
              help="Stop after training: no gate, OOD detector, calibration, ONNX, validation report or card.")
@click.option("--cv", "cv", type=click.IntRange(min=2), default=None,
              help="Patient-grouped K-fold cross-validation of the recipe instead of one run (writes OUT/cv.json).")
@json_option
@click.argument("overrides", nargs=-1)
@run_safely
def train(config, data, out, resume, weights_only, cv, as_json, overrides):
    """Train a model from a YAML config into a finished bundle, runs/NAME/bundle.

    After training: the out-of-distribution detector and chest-X-ray gate, Platt calibration at the
    validation prevalence, ONNX export with parity, the validation report and the model card, as
    `pneumo build` does for a recipe ($PNEUMO_EXTERNAL: other-source images for the gate).

    OVERRIDES are key=value pairs, e.g. model.name=densenet121 train.epochs=20.
    """
    if cv is not None:
        _cross_validate(config, data, out, cv, as_json, overrides)
        return
    if config is not None and resume is None:
        from pneumo.workflows.bundle import is_recipe

        if is_recipe(config):
            from pneumo.errors import ConfigError

            raise ConfigError(f"{config} is a bundle recipe (it lists members): build it with "
                              f"pneumo build {config} --out BUNDLE_DIR")
    from pneumo.training.run import summary
    from pneumo.training.rundir import global_rank
    from pneumo.workflows.bundle import train_bundle

    if resume is not None:
        _check_checkpoint(Path(resume))
    # Lightning's progress bar writes to stdout; keep stdout for the result (--json stays parseable).
    with quiet_training_output(), contextlib.redirect_stdout(sys.stderr):
        bundle = train_bundle(config, data=data, out=out, resume=resume, overrides=overrides,
                              finish=not weights_only)
    if global_rank() != 0:
        return
    result = {**summary(bundle), "finished": not weights_only}
    if as_json:
        emit_json(result)
        return
    click.echo(f"bundle: {bundle}")
    for key in ("wall_time_s", "epochs", "best_epoch", "val_auroc", "val_accuracy", "val_sensitivity",
                "val_specificity", "official_val_auroc", "finished"):
        value = result[key]
        click.echo(f"  {key:22s} {value:.4f}" if isinstance(value, float) else f"  {key:22s} {value}")


def _check_checkpoint(run_dir: Path) -> None:
    """A damaged ``last.ckpt`` is one line naming it, not Lightning's 60-line unpickling traceback."""
    import torch  # lazy, like every verb's heavy imports: `pneumo --help` must not load PyTorch

    from pneumo.errors import ConfigError
    from pneumo.training.rundir import CHECKPOINTS, LAST

    ckpt = run_dir / CHECKPOINTS / LAST
    if not ckpt.is_file():
        return  # training reports a run with nothing to resume
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... on damaged files
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"{ckpt}: not a readable checkpoint ({why}); the run cannot be resumed from it: "
                          f"start a new run with --out, or restore the file") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(f"{ckpt}: not a Lightning checkpoint (no state_dict); start a new run with --out")


def _cross_validate(config, data, out, k: int, as_json: bool, overrides) -> None:
    from pneumo.errors import ConfigError
    from pneumo.workflows.cv import cross_validate, format_table

    if config is None:
        raise ConfigError("--cv needs --config CONFIG.yaml")
    out = out or Path("runs") / f"cv-{Path(config).stem}"
    with quiet_training_output(), contextlib.redirect_stdout(sys.stderr):
        report = cross_validate(config, data=data, out=out, k=k, overrides=overrides)
    if as_json:
        emit_json(report)
        return
    click.echo(f"{k}-fold patient-grouped CV: {out}/cv.json\n{format_table(report)}")
