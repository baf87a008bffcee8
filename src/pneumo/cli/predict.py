"""``pneumo predict``, ``pneumo export`` and ``pneumo bench``: using a bundle outside training."""

from __future__ import annotations

import csv
import glob
import io
import sys
from pathlib import Path

import click

from pneumo.cli.common import choose_onnx, data_option, emit_json, json_option, onnx_file_options, run_safely
from pneumo.data.sniff import IMAGE_SUFFIXES

COLUMNS = ("path", "status", "probability", "decision", "threshold", "reason", "ood", "ood_score", "population",
           "population_score", "error")
SKIP_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


def split_bundle(args: tuple[str, ...]) -> tuple[Path, list[str]]:
    """The first argument is the bundle iff it is a directory holding ``pneumo.json``; else the default model.

    A first argument that names nothing, is not a glob and is not an image file name, followed by
    more arguments, is a mistyped BUNDLE: refusing it beats silently answering with the default model.
    """
    from pneumo.errors import BundleError
    from pneumo.inference import default_bundle_path

    first = Path(args[0]) if args else None
    if first is not None and first.is_dir() and (first / "pneumo.json").is_file():
        return first, list(args[1:])
    if first is not None and first.is_dir() and (first / "model.safetensors").exists():
        raise BundleError(f"{first}: looks like a model bundle but has no pneumo.json")
    if (first is not None and len(args) > 1 and not first.exists() and not glob.has_magic(args[0])
            and first.suffix.lower() not in IMAGE_SUFFIXES):
        raise BundleError(
            f"{first}: no such bundle directory (mistyped BUNDLE?); to use the default model give only INPUT files"
        )
    return default_bundle_path(), list(args)


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files as given, folders recursively (hidden and OS junk files skipped), globs expanded.

    Anything that matches nothing is kept, so it becomes an error row rather than vanishing.
    """
    out: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(
                str(f) for f in sorted(p.rglob("*"))
                if f.is_file() and not f.name.startswith(".") and f.name.lower() not in SKIP_NAMES
            )
        elif not p.exists() and glob.has_magic(item):
            matches = [m for m in sorted(glob.glob(item, recursive=True)) if Path(m).is_file()]
            out.extend(matches or [item])
        else:
            out.append(item)
    return out


def rows_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _row(a) -> dict:
    """One :class:`~pneumo.analysis.Analysis` as a CSV row: a refused film has no probability."""
    p = a.prediction
    return {
        "path": a.path,
        "status": a.status,
        "probability": None if a.probability is None else round(a.probability, 6),
        "decision": None if a.status == "error" else a.decision,
        "threshold": None if p is None else round(p.threshold, 6),
        "reason": a.headline if a.status in ("refused", "flagged") else None,
        "ood": None if p is None else p.ood,
        "ood_score": None if p is None or p.ood_score is None else round(p.ood_score, 4),
        "population": None if p is None else p.population,
        "population_score": None if p is None or p.population_score is None else round(p.population_score, 4),
        "error": None if a.error is None else str(a.error),
    }


@click.command()
@click.argument("args", nargs=-1, required=True, metavar="[BUNDLE] INPUT...")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the rows to this CSV file.")
@json_option
@click.option("--batch-size", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option("--backend", type=click.Choice(["auto", "onnx", "torch"]), default="auto", show_default=True)
@onnx_file_options
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Inference threads (default: library's).")
@click.option("--frame", type=click.IntRange(min=0), default=None,
              help="Which frame (0-based) of a multi-frame DICOM to read; such files are refused without it.")
@run_safely
def predict(args, out, as_json, batch_size, backend, int8, onnx_file, threads, frame):
    """Predict every image in INPUT (files, folders, globs). Without BUNDLE: $PNEUMO_MODEL or models/default.

    One row per file: path, status, probability, decision, threshold, reason, ood, ood_score, population,
    population_score, error. status: decided; flagged (an answer outside the validated population —
    reason says why: an atypical film, an age outside the validated range); refused (no probability:
    not a chest X-ray, or ruled out by its DICOM header — a CT, a lateral view); error (unreadable:
    the rest go on). The exit status is 1 when no file could be read.
    """
    from pneumo.analysis import Analyser
    from pneumo.bundle import atomic_write_bytes
    from pneumo.errors import ConfigError
    from pneumo.inference import Predictor

    bundle, inputs = split_bundle(args)
    if not inputs:
        raise ConfigError(f"no INPUT given (the first argument {args[0]} was taken as the bundle)")
    backend, onnx_file = choose_onnx(backend, int8, onnx_file)
    pred = Predictor(bundle, backend=backend, threads=threads, onnx_file=onnx_file)
    analyser = Analyser(pred)
    rows = [_row(a) for a in analyser.analyse_many(expand_inputs(inputs), batch_size=batch_size, frame=frame,
                                                       on_error="record", progress=True)]
    for r in rows:  # name the option where the reader's message says "choose one (frame=0..N)"
        if r["error"] and "frames; choose one" in r["error"]:
            r["error"] += " — pass --frame N"
    if out is not None:
        atomic_write_bytes(out, rows_to_csv(rows).encode())
    n_err = sum(r["error"] is not None for r in rows)
    if as_json:
        emit_json({"bundle": str(bundle), "backend": pred.backend, "n": len(rows), "n_errors": n_err, "rows": rows})
    elif out is None:
        click.echo(rows_to_csv(rows), nl=False)
    else:
        click.echo(f"{len(rows)} rows ({n_err} errors) → {out}", err=True)
    if n_err == len(rows):
        what = f"none of the {len(rows)} input file(s) could be read" if rows else "no files found in INPUT"
        click.echo(f"error: {what}", err=True)
        sys.exit(1)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx if validation AUROC drops ≤ 0.002.")
@data_option
@click.option("--n-images", type=click.IntRange(32, 10000), default=64, show_default=True,
              help="Validation images for the parity (and int8 AUROC) check.")
@json_option
@run_safely
def export(bundle, int8, data, n_images, as_json):
    """Export BUNDLE to ONNX (opset 17, dynamic batch; outputs logit + embedding) after a parity check:
    max |Δprobability| ≤ 1e-4 vs PyTorch on real validation images, else nothing is written."""
    from pneumo.inference.export import export_bundle

    block = export_bundle(bundle, data=data, int8=int8, n_images=n_images)
    if as_json:
        emit_json(block)
        return
    par = block["parity"]
    click.echo(f"{bundle}/{block['file']}: opset {block['opset']}, parity max |Δp| {par['max_abs_diff']:.2e} "
               f"on {par['n_images']} images ({par['source']})")
    if block["int8"]:
        i8 = block["int8"]
        click.echo(f"{bundle}/{i8['file']}: AUROC {i8['auroc_int8']:.4f} vs fp32 {i8['auroc_fp32']:.4f}")


@click.command()
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("--n", "n", type=click.IntRange(5, 100000), default=200, show_default=True,
              help="Single-image runs for the latency figures.")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Threads (default: torch's).")
@click.option("--quick", is_flag=True,
              help="A rough figure in seconds: 20 latency runs (unless --n), batch 32 only, a short peak measurement.")
@data_option
@json_option
@run_safely
def bench(bundle, n, threads, quick, data, as_json):
    """Latency (read JPEG → probability) and throughput (batch 32/64) for torch, ONNX fp32 and int8.

    A progress bar on stderr shows which step runs (the full run takes a minute or more on 2 cores)."""
    from tqdm import tqdm

    from pneumo.inference import default_bundle_path
    from pneumo.inference.bench import STEPS, bench_bundle, format_table, int8_verdict

    ctx = click.get_current_context()
    if quick and ctx.get_parameter_source("n") is click.core.ParameterSource.DEFAULT:
        n = 20
    with tqdm(total=len(STEPS), desc="bench", unit="step", file=sys.stderr, disable=None) as bar:
        def step(name: str) -> None:  # called as each step starts: the bar counts the finished ones
            bar.update(STEPS.index(name) - bar.n)
            bar.set_postfix_str(name)

        result = bench_bundle(bundle or default_bundle_path(), n=n, threads=threads, data=data, quick=quick,
                              batch_sizes=(32,) if quick else (32, 64), step=step)
        bar.update(bar.total - bar.n)
    result["int8_verdict"] = int8_verdict(result)
    if as_json:
        emit_json(result)
    else:
        click.echo(format_table(result))
        click.echo("(one machine, one run: medians; on a shared CPU, compare only figures taken together)")
        click.echo(result["int8_verdict"])
