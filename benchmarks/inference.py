"""Inference speed per architecture: torch vs ONNX fp32 vs ONNX int8 (untrained weights; speed only).

    .venv/bin/python benchmarks/inference.py [--n 50] [--threads 1] [--json out.json] [--only tiny_cnn,resnet18]

Prints one table per registered architecture (tiny_cnn@64, seed_cnn@150, compact_cnn@224, resnet18@224,
densenet121@224). Not part of the test suite. On a shared machine, run it when it is quiet and
compare only figures taken in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from pneumo.bundle import save_bundle
from pneumo.data.preprocess import PreprocessSpec
from pneumo.inference.bench import bench_bundle, format_table, measure_peak_flops
from pneumo.models import available_models, build_model

ARCHS = [("tiny_cnn", 64, {}), ("seed_cnn", 150, {}), ("compact_cnn", 224, {}), ("resnet18", 224, {}),
         ("densenet121", 224, {})]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="single-image runs per backend")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="batch runs per batch size")
    ap.add_argument("--only", default="", help="comma-separated architecture names")
    ap.add_argument("--json", type=Path, default=None, help="also write all results here")
    args = ap.parse_args(argv)
    import torch

    threads = args.threads or torch.get_num_threads()
    peak = measure_peak_flops(threads)
    registered = set(available_models())
    wanted = set(filter(None, args.only.split(",")))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, size, kwargs in ARCHS:
            if name not in registered or (wanted and name not in wanted):
                continue
            model = build_model(name, **kwargs).eval()
            path = save_bundle(Path(tmp) / name, model, architecture={"name": name, "kwargs": kwargs},
                               spec=PreprocessSpec(size=size), operating_point={"logit": 0.0}, name=name)
            t = time.perf_counter()
            res = bench_bundle(path, n=args.n, threads=threads, repeats=args.repeats, peak=peak)
            res["seconds"] = time.perf_counter() - t
            results.append(res)
            print(format_table(res), end="\n\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
