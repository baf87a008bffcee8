"""How much an explanation costs, per architecture, on one 224×224 image (CPU, median of N runs).

Columns: forward (inference mode), forward+backward (the floor for any gradient method), Grad-CAM,
Grad-CAM++ (both include the private model copy ``explain_tensor`` makes), occlusion (one forward per
mask position, batched), and the copy alone. Usage::

    .venv/bin/python benchmarks/explain.py [--models tiny_cnn,compact_cnn,resnet18] [--repeats 5]
        [--size 224] [--no-occlusion] [--threads N] [--clock wall|cpu] [--json]

``--clock cpu`` (process CPU time) with ``--threads 1`` gives figures that hold up on a machine shared
with other jobs, where wall-clock medians mostly measure the neighbours.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import numpy as np
import torch

from pneumo.explain import explain_tensor
from pneumo.models import available_models, build_model

CLOCK = time.perf_counter


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, oneDNN kernel selection)
    times = []
    for _ in range(repeats):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return 1000 * statistics.median(times)


def bench_model(name: str, size: int, repeats: int, occlusion: bool) -> dict:
    model = build_model(name).eval()
    x = np.random.default_rng(0).standard_normal((1, size, size)).astype(np.float32)
    xt = torch.from_numpy(x[None])

    def forward():
        with torch.inference_mode():
            model(xt)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(xt.clone().requires_grad_(True)).sum().backward()

    row = {
        "model": name,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "forward_ms": _median_ms(forward, repeats),
        "fwd_bwd_ms": _median_ms(forward_backward, repeats),
        "copy_ms": _median_ms(lambda: copy.deepcopy(model), repeats),
        "gradcam_ms": _median_ms(lambda: explain_tensor(model, x, "gradcam"), repeats),
        "gradcam++_ms": _median_ms(lambda: explain_tensor(model, x, "gradcam++"), repeats),
    }
    model.zero_grad(set_to_none=True)
    if occlusion:
        row["occlusion_ms"] = _median_ms(lambda: explain_tensor(model, x, "occlusion"), max(1, repeats // 3))
    row["gradcam_over_fwd_bwd"] = row["gradcam_ms"] / row["fwd_bwd_ms"]
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny_cnn,compact_cnn,resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-occlusion", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n in available_models()]
    rows = [bench_model(n, args.size, args.repeats, not args.no_occlusion) for n in names]
    if args.json:
        print(json.dumps({"size": args.size, "repeats": args.repeats, "clock": args.clock, "threads": torch.get_num_threads(), "rows": rows}))
        return
    cols = ["model", "params_m", "forward_ms", "fwd_bwd_ms", "copy_ms", "gradcam_ms", "gradcam++_ms", "occlusion_ms",
            "gradcam_over_fwd_bwd"]
    cols = [c for c in cols if any(c in r for r in rows)]
    print(f"# {args.size}×{args.size}, 1 image, median of {args.repeats} ({args.clock} clock), "
          f"torch threads {torch.get_num_threads()}")
    print(" | ".join(f"{c:>12}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r.get(c, ''):>12}" for c in cols))


if __name__ == "__main__":
    main()
