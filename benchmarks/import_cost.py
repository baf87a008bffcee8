"""Start-up cost of the Python API, as a ratio: ``pneumo.load()`` + one predict vs ``import torch`` + an
ONNX Runtime session on the shipped model.

    .venv/bin/python benchmarks/import_cost.py [--bundle models/default] [--repeats 3] [--json out.json]

Each side runs in a fresh interpreter (so nothing is already imported), ``--repeats`` times
alternately; the ratio is of the medians. The baseline is the floor any torch-based loader pays:
import torch, import onnxruntime, open the bundle's ONNX model, run it once. Issue 25's target is a
ratio ≤ 1.5. Also prints which heavy packages ``pneumo.load()`` + predict imported (MONAI, FastAPI,
Lightning, matplotlib should be absent for the shipped compact CNN). Not part of the test suite; on
a shared machine compare only figures taken in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("monai", "fastapi", "lightning", "matplotlib", "sklearn", "captum", "pynetdicom", "fpdf", "skimage")

BASELINE = """
import time; t0 = time.perf_counter()
import numpy as np, torch, onnxruntime as ort
s = ort.InferenceSession(r"{onnx}", providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
s.run(None, {{i.name: np.zeros([1, 1, {size}, {size}], np.float32)}})
print(time.perf_counter() - t0)
"""

PNEUMO = """
import time; t0 = time.perf_counter()
import sys, pneumo
m = pneumo.load(r"{bundle}")
m.predict(r"{image}")
dt = time.perf_counter() - t0
print(dt)
print(",".join(sorted(h for h in {heavy!r} if h in sys.modules)))
"""


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    return out.stdout.strip().splitlines()


def _image(tmp: Path, size: int) -> Path:
    """A grayscale film-sized PNG (content does not matter for timing)."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    path = tmp / "film.png"
    Image.fromarray(((xx + yy) * 255 // (2 * size)).astype(np.uint8), "L").save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import tempfile

    meta = json.loads((args.bundle / "pneumo.json").read_text())
    size = int(meta["preprocess"]["size"])
    with tempfile.TemporaryDirectory() as tmp:
        image = _image(Path(tmp), 512)
        base, ours, heavy = [], [], ""
        for _ in range(args.repeats):
            base.append(float(_run(BASELINE.format(onnx=args.bundle / "model.onnx", size=size))[0]))
            lines = _run(PNEUMO.format(bundle=args.bundle, image=image, heavy=HEAVY))
            ours.append(float(lines[0]))
            heavy = lines[1] if len(lines) > 1 else ""
    b, p = statistics.median(base), statistics.median(ours)
    result = {"baseline_s": round(b, 3), "pneumo_s": round(p, 3), "ratio": round(p / b, 2),
              "heavy_imported": heavy.split(",") if heavy else [], "repeats": args.repeats}
    print(f"import torch + onnxruntime session: {b:.2f} s   pneumo.load() + predict: {p:.2f} s   "
          f"ratio {p / b:.2f} (target ≤ 1.5)")
    print(f"heavy packages imported by pneumo.load() + predict: {heavy or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
