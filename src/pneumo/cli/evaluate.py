"""``pneumo evaluate | calibrate | compare | card``: honest evaluation from the command line."""

from __future__ import annotations

from pathlib import Path

import click

from pneumo.cli.common import data_option, emit_json, json_option, run_safely

split_option = click.option("--split", default=None,
                            help="Split to evaluate (train, val, test, or 'all'). Default: test when the data has "
                                 "one, else val (said on stderr).")
FALLBACK_SPLITS = ("test", "val")
boot_option = click.option("--bootstrap", "n_boot", type=click.IntRange(0), default=1000, show_default=True,
                           help="Patient bootstrap resamples for the 95% CIs (0 = none).")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")


def _load(data, split, quiet: bool = False):
    """``(data path, samples, split)``; without ``--split``, the held-out ``test`` split when the data
    has one, else ``val`` (the shared Kermany copy holds its test split back), said on stderr."""
    from pneumo.data import load_dataset, resolve_data
    from pneumo.evaluation.runner import select_split

    path = resolve_data(data)
    index = load_dataset(path)
    if split is None:
        split = next((s for s in FALLBACK_SPLITS if index.select(s)), "test")
        if split != "test" and not quiet:
            click.echo(f"{path}: no 'test' split; evaluating '{split}' (choose with --split)", err=True)
    return path, select_split(index, split), split


def _default_out(name: str, split: str | None, prefix: str = "eval") -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    from pneumo.paths import output_dir

    return output_dir("reports", f"{prefix}-{safe}-{split or 'all'}")


def _print_metrics(result: dict) -> None:
    from pneumo.evaluation.metrics import METRIC_LABELS
    from pneumo.evaluation.report import fmt

    d, b = result["data"], result["bundle"]
    click.echo(f"{b['name']} on {d['split'] or 'all'}: {d['n_images']} images "
               f"({d['n_pneumonia']} PNEUMONIA / {d['n_normal']} NORMAL, {d['n_patients']} patients)"
               + (f", {d['n_unreadable']} unreadable skipped" if d["n_unreadable"] else ""))
    click.echo(f"operating point: logit >= {b['threshold_logit']:.4f} (p >= {b['threshold_probability']:.4f}), "
               "not re-tuned")
    for k, label in METRIC_LABELS.items():
        m = result["metrics"][k]
        click.echo(f"  {label:<32} {fmt(m['value'])}  [{fmt(m['lo'])}, {fmt(m['hi'])}]")
    c = result["confusion"]
    click.echo(f"  confusion: TP {c['tp']}  FN {c['fn']}  TN {c['tn']}  FP {c['fp']}")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@data_option
@split_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: reports/eval-<bundle>-<split> in the pneumo home, $PNEUMO_HOME or "
                   "~/.local/share/pneumo).")
@boot_option
@seed_option
@click.option("--gallery", type=click.IntRange(0, 50), default=8, show_default=True,
              help="Most confident false positives / negatives shown in the report (each).")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True)
@json_option
@run_safely
def evaluate(bundle, data, split, out, n_boot, seed, gallery, backend, as_json):
    """Metrics with patient-bootstrap CIs at the bundle's saved operating point, plots, HTML report."""
    from pneumo.bundle import load_bundle
    from pneumo.evaluation.runner import evaluate_bundle

    b = load_bundle(bundle)
    path, samples, split = _load(data, split, quiet=as_json)
    split = None if split == "all" else split
    out = out or _default_out(b.name, split)
    result = evaluate_bundle(b, samples, out, split=split, data_path=path, n_boot=n_boot, seed=seed,
                             progress=not as_json, backend=backend, gallery=gallery)
    result["out"] = str(Path(out).resolve())
    if as_json:
        emit_json(result)
        return
    _print_metrics(result)
    click.echo(f"wrote {Path(out).resolve()}/report.html, metrics.json, predictions.csv, figures/")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@data_option
@click.option("--split", default="val", show_default=True, help="Held-out split to fit the calibration on.")
@click.option("--method", type=click.Choice(["platt", "temperature"]), default="platt", show_default=True,
              help="platt: temperature + bias (calibrated at the split's prevalence); temperature: T only.")
@click.option("--prevalence", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None,
              help="Prevalence the probabilities should assume (e.g. your site's). Without --data, re-targets "
                   "the bundle's existing calibration; decisions never move.")
@json_option
@run_safely
def calibrate(bundle, data, split, method, prevalence, as_json):
    """Fit the calibration on a held-out split (or re-target its prevalence) and store it in pneumo.json."""
    from pneumo.bundle import read_meta
    from pneumo.evaluation.calibration import calibrate_bundle, set_prevalence

    read_meta(bundle)
    if data is None and prevalence is not None:
        block = set_prevalence(bundle, prevalence)
        if as_json:
            emit_json(block)
            return
        click.echo(f"probabilities now assume prevalence {block['prevalence']:.3f} "
                   f"(fitted at {block['fitted_prevalence']:.3f}; bias {block['bias']:+.4f})")
        click.echo("decisions are unchanged: the operating point is a logit")
        return
    _, samples, split = _load(data, split)
    block = calibrate_bundle(bundle, samples, split=split, progress=not as_json, method=method, prevalence=prevalence)
    if as_json:
        emit_json(block)
        return
    click.echo(f"temperature {block['temperature_before']:.4f} -> {block['temperature']:.4f}, "
               f"bias {block['bias']:+.4f} (fitted on {block['n']} images of split {split!r}; "
               f"probabilities at prevalence {block['prevalence']:.3f})")
    for k in ("ece", "brier", "nll"):
        click.echo(f"  {k:<6} before {block[k + '_before']:.4f}  after {block[k + '_after']:.4f}")
    if block["at_bound"]:
        click.echo("warning: the temperature hit its search limit; "
                   "the model's scores carry little signal on this split", err=True)
    click.echo("decisions are unchanged: the operating point is a logit")


@click.command()
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@data_option
@split_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: reports/compare-<split> in the pneumo home).")
@boot_option
@seed_option
@json_option
@run_safely
def compare(bundles, data, split, out, n_boot, seed, as_json):
    """Compare bundles on the same images: metrics with CIs, DeLong + paired bootstrap tests, one ROC."""
    from pneumo.evaluation.compare import compare_bundles
    from pneumo.evaluation.runner import check_out_dir

    path, samples, split = _load(data, split, quiet=as_json)
    split = None if split == "all" else split
    out = out or _default_out("models", split, prefix="compare")
    check_out_dir(out, path, samples)
    result = compare_bundles(bundles, samples, out, split=split, data_path=path, n_boot=n_boot, seed=seed,
                             progress=not as_json)
    if as_json:
        emit_json(result)
        return
    click.echo(result["markdown"])
    click.echo(f"wrote {Path(out).resolve()}/comparison.md, comparison.html, comparison.json, roc.png")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--eval", "eval_dir", type=click.Path(path_type=Path), default=None,
              help="An evaluate output folder whose metrics.json to include.")
@json_option
@run_safely
def card(bundle, eval_dir, as_json):
    """Write MODEL_CARD.md into the bundle (Mitchell et al. 2019)."""
    from pneumo.evaluation.card import write_card

    path, source = write_card(bundle, eval_dir)
    if as_json:
        emit_json({"card": str(path), "evaluation": source})
        return
    click.echo(f"wrote {path}")
    if source == "kept":
        click.echo("evaluation section: kept from the previous card (same weights); "
                   "pass --eval DIR (a `pneumo evaluate` output folder) to replace it", err=True)
    elif source == "none":
        click.echo("evaluation section: validation metrics only; pass --eval DIR "
                   "(a `pneumo evaluate` output folder) to add an evaluation", err=True)
