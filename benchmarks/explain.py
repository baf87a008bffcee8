"""Which explanation should the page show? Every method, measured the way issue 17 measures it.

Per method, on two sets of films the bundle was not trained on — the patient-grouped validation split
listed in the bundle's ``training_manifest.csv`` (224-px copies; one film per patient) and the 16
official val originals — this reports:

- sanity: mean |Spearman| between the trained model's map and a fully weight-randomised copy's
  (Adebayo 2018; target ≤ 0.30), with ``pneumo.explain.sanity``'s ``randomise``/``map_similarity``;
- faithfulness: deletion / insertion AUC with the blur baseline in 20 steps against a smooth random
  map (Petsiuk 2018; targets deletion ≤ random − 0.08, insertion ≥ random + 0.06), with
  ``pneumo.explain.faithfulness``'s ``curves``/``auc``/``random_map``;
- shortcut share: the share of heat on the film border, the background outside the body and burned-in
  text (``pneumo.explain.body``), next to those regions' share of the area;
- time: one film end to end (preprocess → map → original geometry) through the bundle's persistent
  ``Explainer`` (ONNX Runtime for the perturbation methods), median wall and CPU seconds.

Each map explains the model's own decision (PNEUMONIA → evidence for, NORMAL → evidence against),
as the page shows it. Usage (a few minutes on 2 cores for the default set)::

    .venv/bin/python benchmarks/explain.py [BUNDLE] [--data ROOT] [--n-val 24]
        [--methods occlusion,gradcam,...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pneumo.bundle import load_bundle
from pneumo.data import load_dataset, preprocess, read_image
from pneumo.data.locate import resolve_data
from pneumo.errors import PneumoError
from pneumo.explain import METHODS, explain_tensor, explainer_for
from pneumo.explain.body import outside_share
from pneumo.explain.faithfulness import DELETION_MARGIN, INSERTION_MARGIN, auc, curves, random_map
from pneumo.explain.sanity import DEFAULT_BOUND, SEED_TRIES, map_similarity, randomise

DEFAULT_METHODS = "occlusion,occlusion-mean,rise,gradcam,gradcam++,gradcam-fine,integrated-gradients,smoothgrad"


def val_films(bundle, n_per_class: int, seed: int = 0) -> list[Path]:
    """``n_per_class`` films per class from the bundle's patient-grouped validation split, one per patient."""
    manifest = Path(bundle.path) / "training_manifest.csv"
    if not manifest.exists():
        return []
    val = load_dataset(manifest).select("val")
    rng = np.random.default_rng(seed)
    out = []
    for label in (0, 1):
        seen, pool = set(), [s for s in val if s.label == label]
        for i in rng.permutation(len(pool)):
            if pool[i].patient_id not in seen:
                seen.add(pool[i].patient_id)
                out.append(pool[i].path)
            if len(seen) == n_per_class:
                break
    return out


def measure(bundle, paths: list[Path], methods: list[str], seed: int = 0) -> dict:
    ex = explainer_for(bundle)
    model = bundle.model
    pixels = [read_image(p)[0] for p in paths]
    xs = [preprocess(p, bundle.spec) for p in pixels]
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.stack(xs))).reshape(-1).numpy()
    signs = [1.0 if z >= bundle.threshold_logit else -1.0 for z in logits]
    targets = ["pneumonia" if s > 0 else "normal" for s in signs]
    rng = np.random.default_rng(seed)
    rand_maps = [random_map(x.shape[-1], rng) for x in xs]
    rows = {"random": _faith(model, xs, rand_maps, signs) | _shares(rand_maps, xs)}
    for m in methods:
        maps = [ex.raw(x, m, t) for x, t in zip(xs, targets, strict=True)]
        row = _faith(model, xs, maps, signs) | _shares(maps, xs) | _sanity(model, xs, maps, m, targets, seed)
        row |= _timing(ex, pixels[: min(6, len(pixels))], m, targets)
        rows[m] = row
        print(f"  {m}: {json.dumps({k: v for k, v in row.items() if not isinstance(v, list)})}", flush=True)
    rand = rows["random"]
    for m in methods:
        r = rows[m]
        r["meets_faithfulness"] = bool(r["deletion_auc"] <= rand["deletion_auc"] - DELETION_MARGIN
                                       and r["insertion_auc"] >= rand["insertion_auc"] + INSERTION_MARGIN)
        r["meets_sanity"] = bool(r["abs_spearman"] <= DEFAULT_BOUND)
    return {"n_images": len(paths), "n_pneumonia_decisions": targets.count("pneumonia"), "methods": rows}


def _faith(model, xs, maps, signs) -> dict:
    d, i = [], []
    for x, sal, sign in zip(xs, maps, signs, strict=True):
        dc, ic = curves(model, x, sal, sign)  # blur baseline, 20 steps
        d.append(auc(dc))
        i.append(auc(ic))
    return {"deletion_auc": round(float(np.mean(d)), 4), "insertion_auc": round(float(np.mean(i)), 4)}


def _shares(maps, xs) -> dict:
    shares = [outside_share(m, x[0]) for m, x in zip(maps, xs, strict=True)]
    return {k: round(float(np.mean([s[k] for s in shares])), 4) for k in ("outside", "border", "background", "text",
                                                                           "outside_area")}


def _sanity(model, xs, maps, method, targets, seed) -> dict:
    for attempt in range(SEED_TRIES):  # as sanity_check: a mostly flat random map would pass trivially
        rnd = randomise(model, seed=seed + attempt)
        randoms = [explain_tensor(rnd, x, method, t) for x, t in zip(xs, targets, strict=True)]
        if 2 * sum(float(np.ptp(r)) == 0.0 for r in randoms) <= len(randoms):
            break
    rhos = [map_similarity(a, r)[0] for a, r in zip(maps, randoms, strict=True)]
    return {"abs_spearman": round(float(np.mean(np.abs(rhos))), 4), "sanity_seed": seed + attempt}


def _timing(ex, pixels, method, targets) -> dict:
    ex.heatmap(pixels[0], method, targets[0])  # warm-up (session, allocations)
    wall, cpu = [], []
    for p, t in zip(pixels, targets, strict=False):
        w0, c0 = time.perf_counter(), time.process_time()
        ex.heatmap(p, method, t)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall_s": round(statistics.median(wall), 3), "cpu_s": round(statistics.median(cpu), 3)}


def table(name: str, res: dict) -> str:
    rand = res["methods"]["random"]
    lines = [f"**{name}** ({res['n_images']} films, {res['n_pneumonia_decisions']} called PNEUMONIA)", "",
             "| method | sanity \\|ρ\\| (≤ 0.30) | deletion ↓ (≤ rnd − 0.08) | insertion ↑ (≥ rnd + 0.06) "
             "| heat outside body (area) | border / text | s per film (wall / CPU) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for m, r in res["methods"].items():
        if m == "random":
            continue
        ok = "✓" if r["meets_sanity"] else "✗"
        okf = "✓" if r["meets_faithfulness"] else "✗"
        lines.append(f"| {m} | {r['abs_spearman']:.3f} {ok} "
                     f"| {r['deletion_auc']:.3f} ({r['deletion_auc'] - rand['deletion_auc']:+.3f}) {okf} "
                     f"| {r['insertion_auc']:.3f} ({r['insertion_auc'] - rand['insertion_auc']:+.3f}) "
                     f"| {r['outside']:.2f} ({r['outside_area']:.2f}) | {r['border']:.2f} / {r['text']:.3f} "
                     f"| {r['wall_s']:.2f} / {r['cpu_s']:.2f} |")
    lines.append(f"| random map | — | {rand['deletion_auc']:.3f} | {rand['insertion_auc']:.3f} "
                 f"| {rand['outside']:.2f} ({rand['outside_area']:.2f}) "
                 f"| {rand['border']:.2f} / {rand['text']:.3f} | — |")
    return "\n".join(lines)


def merge(files: list[Path]) -> dict:
    """Results of several runs (same bundle), methods of each set combined; the random row recomputed
    by every run is the same map (same seed), so any run's will do."""
    sets: dict = {}
    for f in files:
        for name, res in json.loads(Path(f).read_text())["sets"].items():
            sets.setdefault(name, {**res, "methods": {}})["methods"].update(res["methods"])
    for res in sets.values():  # the random row last but first in the dict, as measure() leaves it
        res["methods"] = {"random": res["methods"].pop("random"), **res["methods"]}
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", nargs="?", default="models/default")
    ap.add_argument("--data", default=None, help="dataset root with val/ originals (default: --data rules)")
    ap.add_argument("--n-val", type=int, default=12, help="films per class from the bundle's validation split")
    ap.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated, from {', '.join(METHODS)}")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and ONNX Runtime threads (1 on a shared machine: spinning thread pools stall there)")
    ap.add_argument("--only", choices=["val", "originals"], default=None, help="measure one set only")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="print the tables of earlier --json files (e.g. sets or methods run in parallel)")
    ap.add_argument("--json", type=Path, default=None, help="also write the full results here")
    args = ap.parse_args()
    if args.merge:
        for name, res in merge(args.merge).items():
            print("\n" + table(name, res) + "\n")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_bundle(args.bundle)
    explainer_for(bundle, threads=args.threads)
    methods = [m for m in args.methods.split(",") if m]
    sets = {} if args.only == "originals" else {"patient-grouped val (224-px copies)": val_films(bundle, args.n_val)}
    try:
        if args.only == "val":
            raise PneumoError("--only val")
        sets["16 official val originals"] = [s.path for s in load_dataset(resolve_data(args.data)).select("val")]
    except PneumoError as exc:  # a missing originals folder only drops that set
        print(f"no originals: {exc}")
    out = {"bundle": str(args.bundle), "torch_threads": torch.get_num_threads(), "sets": {}}
    for name, paths in sets.items():
        if not paths:
            continue
        print(f"{name}: {len(paths)} films", flush=True)
        t = time.perf_counter()
        out["sets"][name] = measure(bundle, paths, methods)
        out["sets"][name]["seconds"] = round(time.perf_counter() - t, 1)
    for name, res in out["sets"].items():
        print("\n" + table(name, res) + "\n")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
