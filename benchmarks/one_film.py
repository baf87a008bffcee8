"""One film's speed (issue 26): reading + preprocessing a full-size original vs a plain Pillow decode.

For each file, in interleaved rounds (so machine load hits all three alike), the median time of:

- ``plain``: ``PIL.Image.open(path).load()``, a full decode and nothing else (the yardstick, 1.0);
- ``full``: ``preprocess(read_image(path)[0], spec)``, the path at original geometry;
- ``reduced``: ``preprocess(read_image(path, target=spec.size)[0], spec)``, what the Predictor's batch
  loop and the training cache do: a JPEG decoded by libjpeg at 1/2, 1/4 or 1/8 (never under the model's
  side), resampled once.

Reported as ratios to ``plain`` (median and worst over the files), with the load average, because the
box is shared. Then the fidelity of ``reduced`` against ``full`` on the loaded model (``pneumo.load()``):
max |logit difference|, decisions, gate and population scores. Not part of the test suite.

    python benchmarks/one_film.py [--images DIR] [--bundle B] [--rounds 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import pneumo
from pneumo.data import load_dataset, preprocess, read_image, resolve_data


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def speed(paths: list[Path], spec, rounds: int) -> dict:
    ways = {
        "plain": lambda p: Image.open(p).load(),
        "full": lambda p: preprocess(read_image(p)[0], spec),
        "reduced": lambda p: preprocess(read_image(p, target=spec.size)[0], spec),
    }
    ratios: dict[str, list[float]] = {"full": [], "reduced": []}
    ms = {k: [] for k in ways}
    for p in paths:
        for fn in ways.values():  # warm the page cache and the imports
            fn(p)
        t = {k: [] for k in ways}
        for _ in range(rounds):
            for k, fn in ways.items():
                t[k].append(_time(lambda fn=fn, p=p: fn(p)))
        med = {k: float(np.median(v)) for k, v in t.items()}
        for k in ratios:
            ratios[k].append(med[k] / med["plain"])
        for k in ways:
            ms[k].append(med[k] * 1000)
    mp = [Image.open(p).size[0] * Image.open(p).size[1] / 1e6 for p in paths]
    return {
        "files": len(paths), "median_megapixels": round(float(np.median(mp)), 2), "rounds": rounds,
        "median_ms": {k: round(float(np.median(v)), 2) for k, v in ms.items()},
        "ratio_to_plain_decode": {k: {"median": round(float(np.median(v)), 2), "max": round(float(np.max(v)), 2)}
                                  for k, v in ratios.items()},
    }


def fidelity(paths: list[Path], bundle: str | None) -> dict:
    model = pneumo.load(bundle)
    pred = model.predictor
    full = [read_image(p)[0] for p in paths]
    reduced = [read_image(p, target=pred.spec.size)[0] for p in paths]
    a, b = pred.predict(full), pred.predict(reduced)

    def gap(key: str) -> float | None:
        pairs = [(getattr(x, key), getattr(y, key)) for x, y in zip(a, b, strict=True)]
        vals = [abs(u - v) for u, v in pairs if u is not None and v is not None]
        return round(max(vals), 5) if vals else None

    return {
        "model": model.name, "threshold_logit": pred.bundle.threshold_logit,
        "max_abs_logit_difference": gap("logit"), "max_abs_gate_score_difference": gap("ood_score"),
        "max_abs_population_score_difference": gap("population_score"),
        "decisions_equal": sum(x.decision == y.decision for x, y in zip(a, b, strict=True)),
        "population_equal": sum(x.population == y.population for x, y in zip(a, b, strict=True)),
        "closest_logit_to_threshold": round(min(abs(x.logit - pred.bundle.threshold_logit) for x in a), 4),
        "decoded_shapes_example": [list(full[0].shape), list(reduced[0].shape)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=None, help="Folder of JPEGs (default: the 16 val originals).")
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--upscale-mp", type=float, default=None,
                    help="Also time copies of the files resampled to this many megapixels (JPEG q95, in a temp "
                         "folder): the official test's originals are larger (median 3.6 MP) than val's. Synthetic: "
                         "smoother than a real film of that size, so its decode is cheaper; read as a direction.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.images:
        paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    else:
        paths = [Path(s.path) for s in load_dataset(resolve_data(None)).select("val")]
    spec = pneumo.load(args.bundle).predictor.spec
    load0 = os.getloadavg()[0]
    out = {"speed": speed(paths, spec, args.rounds), "load_average_1min": [round(load0, 2)]}
    if args.upscale_mp:
        with tempfile.TemporaryDirectory() as tmp:
            big = []
            for p in paths:
                im = Image.open(p).convert("L")
                k = (args.upscale_mp * 1e6 / (im.size[0] * im.size[1])) ** 0.5
                big.append(Path(tmp) / p.name)
                im.resize((round(im.size[0] * k), round(im.size[1] * k)), Image.Resampling.LANCZOS).save(
                    big[-1], "JPEG", quality=95)
            out[f"speed_upscaled_{args.upscale_mp}mp"] = speed(big, spec, args.rounds)
    out["load_average_1min"].append(round(os.getloadavg()[0], 2))
    out["fidelity"] = fidelity(paths, args.bundle)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"load average (1 min) at start and end: {out['load_average_1min']}")
    for key in [k for k in out if k.startswith("speed")]:
        s = out[key]
        print(f"{key}: {s['files']} files, median {s['median_megapixels']} MP; median ms {s['median_ms']}")
        for k, v in s["ratio_to_plain_decode"].items():
            print(f"  {k:8s} read+preprocess / plain decode: median {v['median']}×, worst {v['max']}×")
    print(f"fidelity: {json.dumps(out['fidelity'])}")


if __name__ == "__main__":
    main()
