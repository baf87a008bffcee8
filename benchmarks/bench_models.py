"""Measure pneumo networks on this CPU: params, forward FLOPs, batch-1 latency, train throughput.

Usage: ``python benchmarks/bench_models.py compact_cnn:224 'compact_cnn{"width":32}:192' seed_cnn:150``
Prints one JSON object per line. Iteration counts are small on purpose (shared 2-core machine):
latency is the median of ``--lat-iters`` batch-1 forwards in eval mode under ``inference_mode``;
throughput is batch / median step time over ``--train-iters`` fwd+bwd+SGD steps (after ``--warmup`` steps).
Each figure comes twice: wall clock, and process CPU time (``*_cpu``: all threads summed), which is far
less sensitive to other jobs on a shared machine (run with ``--threads 1`` for a clean cost figure).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from pneumo.models import build_model
from pneumo.models.flops import count_flops, count_params


def parse_spec(spec: str) -> tuple[str, dict, int]:
    """``name{json kwargs}:size`` → (name, kwargs, size)."""
    head, size = spec.rsplit(":", 1)
    name, _, kw = head.partition("{")
    return name, (json.loads("{" + kw) if kw else {}), int(size)


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def latency_ms(model: torch.nn.Module, size: int, iters: int) -> tuple[float, float]:
    model.eval()
    x = torch.randn(1, 1, size, size)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        for _ in range(iters):
            times.append(_timed(lambda: model(x)))
    return tuple(1000 * statistics.median(t) for t in zip(*times, strict=True))


def train_images_per_s(model: torch.nn.Module, size: int, batch: int, iters: int,
                       warmup: int = 2) -> tuple[float, float]:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(batch, 1, size, size), torch.randint(0, 2, (batch,)).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(warmup):
        step()
    times = [_timed(step) for _ in range(iters)]
    return tuple(batch / statistics.median(t) for t in zip(*times, strict=True))


def measure(name: str, kwargs: dict, size: int, *, lat_iters: int = 20, train_iters: int = 3, batch: int = 32,
            warmup: int = 2) -> dict:
    model = build_model(name, **kwargs)
    lat, lat_cpu = latency_ms(model, size, lat_iters)
    thr, thr_cpu = train_images_per_s(model, size, batch, train_iters, warmup) if train_iters else (None, None)
    return {
        "model": name, "kwargs": kwargs, "size": size, "threads": torch.get_num_threads(),
        "params_M": round(count_params(model) / 1e6, 3),
        "gflops": round(count_flops(model, size) / 1e9, 3),
        "latency_ms_b1": round(lat, 2), "latency_cpu_ms_b1": round(lat_cpu, 2),
        f"train_img_s_b{batch}": thr and round(thr, 1), f"train_img_per_cpu_s_b{batch}": thr_cpu and round(thr_cpu, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lat-iters", type=int, default=20)
    ap.add_argument("--train-iters", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for spec in args.specs:
        name, kwargs, size = parse_spec(spec)
        print(json.dumps(measure(name, kwargs, size, lat_iters=args.lat_iters, train_iters=args.train_iters,
                                 batch=args.batch)), flush=True)


if __name__ == "__main__":
    main()
