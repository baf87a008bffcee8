"""``pneumo data audit | split``: look at a dataset before trusting it, then split it by patient."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import click

from pneumo.cli.common import data_option, emit_json, json_option, run_safely


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Audit a dataset and split it by patient.

    \b
    pneumo data audit [ROOT]                    counts, patients, sizes, duplicates, leakage -> HTML + JSON
    pneumo data split [ROOT] --out split.csv    patient-grouped, class-stratified manifest
    """


def _root(root: Path | None, data_flag: Path | None) -> Path:
    from pneumo.data import resolve_data

    return resolve_data(root or data_flag)


@data.command()
@click.argument("root", required=False, type=click.Path(path_type=Path))
@data_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for audit.json and report.html (default: reports/audit in the pneumo home, $PNEUMO_HOME or "
                   "~/.local/share/pneumo).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Decoding processes (default: up to 2).")
@click.option("--near-dup-bits", type=click.IntRange(0, 32), default=None,
              help="pHash distance (of 64 bits) for near-duplicate candidates; confirmed by thumbnail correlation.")
@json_option
@run_safely
def audit(root, data, out, workers, near_dup_bits, as_json):
    """Audit a dataset: what is in it and what could fool a model.

    Decodes every image once and reports counts per split x class, pathogens, patients per split,
    image sizes/aspect/modes per class, intensity histograms, exact (sha256) and near (pHash)
    duplicates within and across splits, patient ids shared by splits, unreadable and skipped
    files, and shortcut warnings (e.g. image size alone separating the classes). Writes
    audit.json and a self-contained report.html.

    ROOT is a dataset folder or CSV manifest (default: --data, $PNEUMO_DATA, ./data/chest_xray,
    ../shared/data/chest_xray).
    """
    from pneumo.data.audit import NEAR_DUP_BITS, run_audit
    from pneumo.data.audit_report import write_outputs

    path = _root(root, data)
    result = run_audit(path, workers=workers, progress=not as_json,
                       near_dup_bits=NEAR_DUP_BITS if near_dup_bits is None else near_dup_bits)
    from pneumo.paths import output_dir

    paths = write_outputs(result, out or output_dir("reports", "audit"))
    if as_json:
        emit_json({**result.summary, "outputs": {k: str(v) for k, v in paths.items()}})
        return
    _print_audit(result.summary)
    click.echo(f"wrote {paths['json']} and {paths['html']}")


def _print_audit(s: dict) -> None:
    click.echo(f"{s['root']}: {s['n_images']} images decoded of {s['n_files_found']} found in {s['wall_seconds']} s")
    for split, c in s["counts"].items():
        p = s["patients"][split]
        path = ", ".join(f"{k} {v}" for k, v in s["pathogens"].get(split, {}).items())
        click.echo(f"  {split:<12} NORMAL {c['NORMAL']:>5}  PNEUMONIA {c['PNEUMONIA']:>5} ({path or 'none'})"
                   f"  patients {p['patients']:>5}  ({c['pneumonia_fraction']:.1%} PNEUMONIA)")
    nd = s["near_duplicates"]
    click.echo(f"  exact duplicate groups {len(s['exact_duplicates'])}, near-duplicate pairs {nd['n_pairs']} "
               f"({nd['n_cross_split']} across splits), unreadable {len(s['unreadable'])}, skipped {len(s['skipped'])}")
    for w in s["warnings"]:
        click.echo(f"  warning: {w}")


def _with_sha256(samples: list, progress: bool) -> list:
    import dataclasses

    from tqdm import tqdm

    out = []
    for s in tqdm(samples, desc="sha256", unit="img", leave=False, disable=not progress):
        digest = s.sha256 or hashlib.sha256(s.path.read_bytes()).hexdigest()
        out.append(dataclasses.replace(s, sha256=digest))
    return out


@data.command()
@click.argument("root", required=False, type=click.Path(path_type=Path))
@data_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Manifest CSV to write.")
@click.option("--val", type=float, default=0.15, show_default=True, help="Fraction of the pooled images for val.")
@click.option("--test", type=float, default=0.15, show_default=True,
              help="Fraction for test; ignored while an official test split is kept.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same split.")
@click.option("--resplit-test", is_flag=True,
              help="Pool the official test (and val) images too and re-split everything.")
@json_option
@run_safely
def split(root, data, out, val, test, seed, resplit_test, as_json):
    """Split a dataset by patient into a manifest CSV (train / val / test).

    No patient lands in two splits; each new split's PNEUMONIA share is within 2 points of the
    pool's; the same seed gives the same split. An official test split is kept untouched (only val
    is carved from train) unless --resplit-test. The official val folder (16 images in the Kermany
    release) is kept apart as split 'val_official'. Columns: path, label, split, patient_id,
    pathogen, sha256 (+ source_split). The manifest works anywhere a dataset folder does.

    ROOT is a dataset folder or CSV manifest (default: --data, $PNEUMO_DATA, ./data/chest_xray,
    ../shared/data/chest_xray).
    """
    from pneumo.data import load_dataset, write_manifest
    from pneumo.data.split import patient_split, split_summary

    index = load_dataset(_root(root, data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = patient_split(index.samples, val=val, test=test, seed=seed, resplit_test=resplit_test)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    samples = _with_sha256(samples, progress=not as_json)
    write_manifest(samples, out)
    summary = {"manifest": str(out), "seed": seed, **split_summary(samples), "skipped": len(index.skipped)}
    if as_json:
        emit_json(summary)
        return
    for name, row in summary["splits"].items():
        click.echo(f"  {name:<13} {row['images']:>5} images  NORMAL {row['NORMAL']:>5}  PNEUMONIA {row['PNEUMONIA']:>5}"
                   f"  ({row['pneumonia_share']:.1%})  patients {row['patients']:>5}")
    click.echo(f"patients in more than one split: {len(summary['patients_in_several_splits'])}")
    click.echo(f"wrote {out}")
