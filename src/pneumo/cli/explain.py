"""``pneumo explain``: heatmap overlays (PNG) and raw maps (``.npy``) for X-rays, plus optional checks."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pneumo.cli.common import emit_json, json_option, run_safely
from pneumo.explain.core import DEFAULT_METHOD, METHODS  # the command needs torch anyway


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--method", type=click.Choice(list(METHODS)), default=DEFAULT_METHOD, show_default=True,
              help="Explanation method (the default was chosen by measurement: docs/explain.md).")
@click.option("--target", type=click.Choice(["decision", "pneumonia", "normal"]), default="decision", show_default=True,
              help="Whose evidence is shown: the model's decision (PNEUMONIA → for, NORMAL → against), "
                   "or a fixed class.")
@click.option("--layer", default=None, help="Target layer (dotted module name); default: the model's cam_layer.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for <stem>_<method>.png overlays (default: explanations/ in the pneumo home, "
                   "$PNEUMO_HOME or ~/.local/share/pneumo; printed).")
@click.option("--maps", "save_maps", is_flag=True,
              help="Also write the raw maps as <stem>_<method>.npy (float32 at the film's full size: up to "
                   "~10 MB each, so off by default).")
@json_option
@click.option("--sanity", is_flag=True, help="Model-parameter randomisation test on the images (exit 1 if it fails).")
@click.option("--faithfulness", is_flag=True, help="Deletion/insertion AUC of every method vs a random map.")
@click.option("--check-images", type=click.IntRange(1, 1000), default=8, show_default=True,
              help="How many of the images the checks use.")
@run_safely
def explain(bundle, inputs, method, target, layer, out, save_maps, as_json, sanity, faithfulness, check_images):
    """Explain BUNDLE's prediction on every image in INPUT (files, folders, globs; JPEG/PNG/DICOM).

    Writes, per image, OUT/<stem>_<method>.png (the X-ray with the heatmap, a colour bar and the
    probability/decision) and, with --maps, OUT/<stem>_<method>.npy (float32 H×W in [0, 1], original geometry).
    An unreadable file is reported and skipped; the others go on.
    """
    from tqdm import tqdm

    from pneumo.analysis import Analyser
    from pneumo.bundle import load_bundle
    from pneumo.cli.predict import expand_inputs
    from pneumo.explain import explainer_for, resolve_layer
    from pneumo.paths import output_dir

    out = out or output_dir("explanations")
    b = load_bundle(bundle)
    resolve_layer(b.model, layer)  # a bad --layer fails before any work
    predictor = Analyser(b)
    explainer = explainer_for(b)
    out.mkdir(parents=True, exist_ok=True)
    rows, checked, used = [], [], set()
    for path in tqdm(expand_inputs(list(inputs)), unit="img", desc=f"explain ({method})", disable=None):
        row, x = _explain_file(path, b, predictor, explainer, method, target, layer, out, used, save_maps)
        rows.append(row)
        if x is not None and len(checked) < check_images:
            checked.append(x)
    n_ok = sum(r["error"] is None and r["status"] != "refused" for r in rows)
    if n_ok == 0 and not any(r["status"] == "refused" for r in rows):
        from pneumo.errors import ImageError

        raise ImageError(f"none of the {len(rows)} inputs could be explained")
    used_layer = layer or b.model.cam_layer if method.startswith("gradcam") else None
    report = {"bundle": str(bundle), "method": method, "target": target, "layer": used_layer, "out": str(out),
              "n_images": n_ok, "n_errors": len(rows) - n_ok, "images": rows}
    if sanity:
        from pneumo.explain.sanity import sanity_check

        report["sanity"] = sanity_check(b.model, checked, method, target, layer, threshold_logit=b.threshold_logit)
    if faithfulness:
        from pneumo.explain.faithfulness import faithfulness as faith

        methods = list(dict.fromkeys([method, "occlusion", "gradcam", "gradcam++"]))
        report["faithfulness"] = faith(b.model, checked, methods, threshold_logit=b.threshold_logit, layer=layer,
                                       explain=lambda x, m, t: explainer.raw(x, m, t, layer))
    emit_json(report) if as_json else _print_human(report)
    if sanity and not report["sanity"]["passed"]:
        sys.exit(1)


def _explain_file(path, b, predictor, explainer, method, target, layer, out: Path, used: set[str],
                  save_maps: bool = False):
    """One input → overlay PNG (+ heatmap .npy with ``save_maps``) in ``out``; returns its report row
    and its model input (``1×S×S``, for the checks), or an error row and ``None`` when the file cannot be read."""
    from tqdm import tqdm

    from pneumo.bundle import atomic_write_bytes
    from pneumo.data import preprocess
    from pneumo.data.preprocess import resample
    from pneumo.errors import PneumoError
    from pneumo.explain import overlay_png
    from pneumo.explain.explainer import shows, target_for
    from pneumo.explain.render import MAX_SIDE

    row = {"path": path, "status": None, "reason": None, "overlay": None, "heatmap": None, "probability": None,
           "decision": None, "target": None, "error": None}
    try:
        a = predictor.analyse(path)
        row.update(status=a.status, reason=a.headline, decision=a.decision)
        if not a.accepted or a.pixels is None or a.prediction is None:  # refused: no heatmap for a non-answer
            tqdm.write(f"{path}: no heatmap: {a.headline}", file=sys.stderr)
            return row, None
        pixels, pred = a.pixels, a.prediction
        shown = target_for(pred.decision) if target == "decision" else target
        heat = explainer.heatmap(pixels, method=method, target=shown, layer=layer)
        if a.meta is not None:  # the map at the film's own geometry, whatever size the model's pixels were decoded at
            heat = resample(heat, a.meta.height, a.meta.width)
        film = a.display_pixels(MAX_SIDE)
        film = pixels if film is None else film
    except PneumoError as exc:
        row["error"] = str(exc)
        tqdm.write(f"skipped: {exc}", file=sys.stderr)
        return row, None
    stem = _unique(Path(path).stem, used)
    caption = (f"P(pneumonia) = {pred.probability:.2f} → {pred.decision} (threshold {pred.threshold:.2f})"
               f"   ·   {shows(shown, method)}   ·   {b.name}")
    if a.headline:  # flagged: the population warning leads
        caption = f"{a.headline}   ·   {caption}"
    png, npy = out / f"{stem}_{method}.png", out / f"{stem}_{method}.npy"
    shown_heat = heat if heat.shape == film.shape else resample(heat, *film.shape)
    atomic_write_bytes(png, overlay_png(film, shown_heat, caption))
    if save_maps:
        atomic_write_bytes(npy, _npy_bytes(heat))
    row.update(overlay=str(png), heatmap=str(npy) if save_maps else None, probability=round(pred.probability, 4),
               decision=pred.decision, target=shown)
    return row, preprocess(pixels, b.spec)


def _unique(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``… when two inputs share a file name (e.g. in two folders)."""
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}-{k}"
    used.add(name)
    return name


def _npy_bytes(a) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(a, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _print_human(report: dict) -> None:
    what = "overlays + raw maps (.npy)" if any(r["heatmap"] for r in report["images"]) else "overlays"
    layer = f", layer {report['layer']}" if report["layer"] else ""  # only Grad-CAM methods have one
    click.echo(f"{report['n_images']} {what} in {Path(report['out']).resolve()} "
               f"({report['method']}, target {report['target']}{layer}); {report['n_errors']} skipped")
    if "sanity" in report:
        s = report["sanity"]
        verdict = "PASS" if s["passed"] else "FAIL"
        click.echo(f"sanity (weights randomised, {s['n_images']} images): mean |Spearman| {s['abs_spearman_mean']} "
                   f"(bound {s['bound']}), mean SSIM {s['ssim_mean']} → {verdict}")
    if "faithfulness" in report:
        f = report["faithfulness"]
        click.echo(f"faithfulness on {f['n_images']} images (deletion: lower is better; insertion: higher):")
        click.echo(f"  {'method':<20} {'deletion':>9} {'insertion':>9}  targets (rnd −0.08 / +0.06)")
        for name, v in [*f["methods"].items(), ("random", f["random"])]:
            met = "" if name == "random" else ("met" if v["meets_targets"] else "missed")
            click.echo(f"  {name:<20} {v['deletion_auc']:>9.3f} {v['insertion_auc']:>9.3f}  {met}")
