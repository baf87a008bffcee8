"""OOD figures for a bundle that has a detector: refusal rate on real non-X-ray images shipped inside
installed packages (scikit-image sample images, pydicom CT/MR/RT samples; local files only, nothing is
downloaded), blanks and noise; acceptance rate on the dataset's val originals.

    .venv/bin/python benchmarks/ood_report.py BUNDLE [--data ROOT] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

from pneumo.data import load_dataset, read_image, resolve_data
from pneumo.errors import ImageError
from pneumo.inference import Predictor

DICOM = ("CT_small.dcm", "MR_small.dcm", "liver_1frame.dcm", "rtdose_1frame.dcm", "JPEG2000.dcm")


def foreign_images() -> dict[str, tuple[str, np.ndarray]]:
    import pydicom
    import skimage

    out: dict[str, tuple[str, np.ndarray]] = {}
    for f in sorted((Path(skimage.__file__).parent / "data").iterdir()):
        if f.suffix in (".png", ".jpg"):
            with contextlib.suppress(ImageError):
                out[f.name] = ("skimage", read_image(f)[0])
    for n in DICOM:
        with contextlib.suppress(ImageError):
            out[n] = ("pydicom", read_image(Path(pydicom.__file__).parent / "data" / "test_files" / n)[0])
    rng = np.random.default_rng(0)
    for name, arr in {"blank_black": np.zeros((300, 300)), "blank_white": np.ones((300, 300)),
                      "blank_grey": np.full((300, 300), 0.5), "noise_uniform": rng.random((300, 300)),
                      "noise_gauss": np.clip(rng.normal(0.5, 0.2, (300, 300)), 0, 1)}.items():
        out[name] = ("synthetic", arr.astype(np.float32))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--data", default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    pred = Predictor(args.bundle)
    if pred.ood_detector is None:
        print(f"{args.bundle}: no OOD detector fitted", file=sys.stderr)
        return 2
    imgs = foreign_images()
    res = pred.predict([a for _, a in imgs.values()])
    per_source: dict[str, list[bool]] = {}
    rows = []
    for (name, (src, _)), r in zip(imgs.items(), res, strict=True):
        per_source.setdefault(src, []).append(r.ood)
        rows.append({"image": name, "source": src, "ood_score": r.ood_score, "refused": r.ood})
    val = load_dataset(resolve_data(args.data)).select("val")
    vres = pred.predict([read_image(s.path)[0] for s in val])
    report = {
        "threshold": pred.ood_detector.threshold,
        "refused": {k: f"{sum(v)}/{len(v)}" for k, v in per_source.items()},
        "refused_all": f"{sum(r['refused'] for r in rows)}/{len(rows)}",
        "accepted_val_originals": f"{sum(not r.ood for r in vres)}/{len(vres)}",
        "val_scores": [round(r.ood_score, 3) for r in vres],
        "rows": rows,
    }
    for r in rows:
        print(f"{r['source']:<10} {r['image']:<28} {r['ood_score']:>10.2f} {'REFUSED' if r['refused'] else 'accepted'}")
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
