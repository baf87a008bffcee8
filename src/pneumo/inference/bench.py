"""Inference speed on this machine: end-to-end single-image latency, batch throughput, FLOP efficiency.

- **latency**: one JPEG, ``read_image → preprocess → model → probability``, repeated ``n`` times;
  median and p95 in milliseconds.
- **throughput**: already-preprocessed batches of 32 and 64 through the model only; images/s
  (median over repeats).
- **FLOPs/image** from :func:`pneumo.models.flops.count_flops` (multiply-add = 2 FLOPs, convs and
  matmuls only), and achieved FLOP/s (FLOPs × best images/s) as a fraction of this CPU's measured
  peak: the best float32 ``torch.mm`` rate (256–1024²), at least threads × the one-thread rate.

Backends: ``torch``, ``onnx`` (fp32, the bundle's ``model.onnx``) and ``onnx-int8``
(``model.int8.onnx``). Missing ONNX files are produced in a temporary folder for timing only (no
parity check there: speed only; ``pneumo export`` is the way to ship them).
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pneumo.bundle import Bundle, load_bundle
from pneumo.data.dataset import load_dataset
from pneumo.data.imageio import read_image
from pneumo.data.locate import resolve_data
from pneumo.data.preprocess import preprocess
from pneumo.errors import PneumoError
from pneumo.inference.export import INT8_FILE, ONNX_FILE, export_onnx_file, static_quantise
from pneumo.inference.predictor import Predictor
from pneumo.models.flops import count_flops


def measure_peak_flops(threads: int, sizes: tuple[int, ...] = (256, 512, 1024), repeats: int = 10) -> float:
    """This CPU's practical float32 peak on ``threads`` threads, from ``torch.mm``.

    Best run over a few sizes (on a shared machine large matmuls turn memory-bound as neighbours evict
    the cache; 256–512² stays in cache and shows what the FMA units can do), and at least ``threads`` ×
    the single-thread figure (multi-threaded BLAS collapses when the cores are oversubscribed, which
    would make any model look faster than "peak"). The restored thread count is ``threads``.
    """
    def best(n_threads: int) -> float:
        torch.set_num_threads(n_threads)
        out = 0.0
        for size in sizes:
            a, b = torch.randn(size, size), torch.randn(size, size)
            out = max(out, 2 * size**3 / min(_timings(functools.partial(torch.mm, a, b), repeats, warmup=2)))
        return out

    single = best(1)
    peak = max(best(threads), threads * single) if threads > 1 else single
    torch.set_num_threads(threads)
    return peak


def _timings(fn: Callable[[], object], n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def latency_ms(predictor: Predictor, jpeg: Path, n: int) -> dict:
    """End-to-end single image: read JPEG → preprocess → model → calibrated probability."""

    def once():
        x = preprocess(read_image(jpeg)[0], predictor.spec)[None]
        return predictor.probabilities(predictor.logits(x))

    t = np.array(_timings(once, n)) * 1000
    return {"median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)), "n": n}


def throughput(predictor: Predictor, batch: np.ndarray, repeats: int) -> float:
    t = statistics.median(_timings(lambda: predictor.logits(batch), repeats, warmup=1))
    return len(batch) / t


def _ensure_onnx(bundle: Bundle, tmp: Path, calib: np.ndarray) -> tuple[Path, Path]:
    """The bundle's ONNX files, or speed-only copies made in ``tmp``."""
    fp32, int8 = bundle.path / ONNX_FILE, bundle.path / INT8_FILE
    if not fp32.exists():
        fp32 = tmp / ONNX_FILE
        export_onnx_file(bundle.model, bundle.spec.size, fp32)
    if not int8.exists():
        int8 = tmp / INT8_FILE
        static_quantise(fp32, int8, calib)
    return fp32, int8


def sample_jpeg(tmp: Path, data: str | Path | None = None) -> Path:
    """A real X-ray JPEG from the dataset when one can be found, else a synthetic 1024² JPEG."""
    try:
        index = load_dataset(resolve_data(data))
        jpegs = [s.path for s in index.select("val") or index.samples if s.path.suffix.lower() in (".jpeg", ".jpg")]
        if jpegs:
            return jpegs[0]
    except PneumoError:
        pass
    rng = np.random.default_rng(0)
    path = tmp / "synthetic.jpeg"
    Image.fromarray((rng.random((1024, 1024)) * 255).astype(np.uint8)).save(path, quality=90)
    return path


def bench_bundle(
    bundle: Bundle | str | Path,
    n: int = 200,
    threads: int | None = None,
    batch_sizes: tuple[int, ...] = (32, 64),
    repeats: int = 5,
    data: str | Path | None = None,
    peak: float | None = None,
    quick: bool = False,
    step: Callable[[str], None] | None = None,
) -> dict:
    """Latency/throughput/FLOPs for torch, ONNX fp32 and ONNX int8 on one bundle (see module doc).

    ``step(name)`` is called as each of the :data:`STEPS` starts (a progress bar); ``quick`` measures
    the peak on small matmuls only and repeats each batch twice (seconds, rougher figures)."""
    step = step or (lambda _name: None)
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    threads = threads or torch.get_num_threads()
    step("peak")
    if quick:
        repeats = min(repeats, 2)
        peak = peak or measure_peak_flops(threads, sizes=(256, 512), repeats=3)
    peak = peak or measure_peak_flops(threads)
    flops = count_flops(bundle.model, bundle.spec.size)
    rng = np.random.default_rng(0)
    big = rng.normal(0, 1, (max(batch_sizes), 1, bundle.spec.size, bundle.spec.size)).astype(np.float32)
    rows = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        jpeg = sample_jpeg(tmp, data)
        calib = np.stack([preprocess(read_image(jpeg)[0], bundle.spec)] * 8)
        fp32, int8 = _ensure_onnx(bundle, tmp, calib)
        step("read")
        read_t = np.array(_timings(lambda: preprocess(read_image(jpeg)[0], bundle.spec), n)) * 1000
        for name, kwargs in (("torch", {"backend": "torch"}), ("onnx", {"onnx": fp32}), ("onnx-int8", {"onnx": int8})):
            step(name)
            pred = _predictor(bundle, threads, **kwargs)
            row = {"latency": latency_ms(pred, jpeg, n), "throughput": {}}
            for bs in batch_sizes:
                row["throughput"][str(bs)] = throughput(pred, big[:bs], repeats)
            best = max(row["throughput"].values())
            row["achieved_gflops"] = flops * best / 1e9
            row["fraction_of_peak"] = flops * best / peak
            rows[name] = row
    return {
        "bundle": str(bundle.path),
        "architecture": bundle.meta["architecture"]["name"],
        "input_size": bundle.spec.size,
        "threads": threads,
        "flops_per_image": flops,
        "peak_gflops": peak / 1e9,
        "jpeg": str(jpeg),
        "read_preprocess_ms": {"median_ms": float(np.median(read_t)), "p95_ms": float(np.percentile(read_t, 95))},
        "backends": rows,
        "quick": quick,
    }


STEPS = ("peak", "read", "torch", "onnx", "onnx-int8")


def int8_verdict(result: dict) -> str:
    """Whether int8 paid on this machine, from one :func:`bench_bundle` result (throughput at the
    largest batch and single-image latency against ONNX fp32): int8 is offered as the fast option only
    where it measured faster."""
    rows = result["backends"]
    if "onnx" not in rows or "onnx-int8" not in rows:
        return ""
    fp, i8 = rows["onnx"], rows["onnx-int8"]
    bs = max(fp["throughput"], key=int)
    tp = i8["throughput"][bs] / fp["throughput"][bs]
    lat = fp["latency"]["median_ms"] / i8["latency"]["median_ms"]
    faster = tp >= 1.1 and lat >= 1.0
    return (f"int8 vs ONNX fp32 here: {tp:.2f}× throughput (batch {bs}), {lat:.2f}× single-image speed → "
            + ("int8 pays on this CPU (serve or predict with --int8)." if faster else
               "int8 does not pay for this model on this CPU: keep fp32 (the default). In pneumo's measurements it "
               "paid only for plain convolution stacks (seed_cnn, docs/inference.md); run pneumo bench before "
               "choosing --int8."))


def _predictor(bundle: Bundle, threads: int, backend: str = "onnx", onnx: Path | None = None) -> Predictor:
    if backend == "torch":
        return Predictor(bundle, backend="torch", threads=threads, ood=False)
    onnx_file = str(Path(onnx).resolve()) if onnx else None
    return Predictor(bundle, backend="onnx", threads=threads, onnx_file=onnx_file, ood=False)


def format_table(result: dict) -> str:
    """One plain-text table for a :func:`bench_bundle` result."""
    head = (f"{result['architecture']} @ {result['input_size']}px — {result['flops_per_image'] / 1e9:.3f} GFLOP/image, "
            f"{result['threads']} threads, peak {result['peak_gflops']:.1f} GFLOP/s (best fp32 matmul)")
    rp = result["read_preprocess_ms"]
    head += f"\nread+preprocess of the JPEG alone: median {rp['median_ms']:.2f} ms, p95 {rp['p95_ms']:.2f} ms"
    lines = [head, f"{'backend':<10} {'lat med ms':>10} {'lat p95 ms':>10} {'img/s b32':>10} {'img/s b64':>10} "
             f"{'GFLOP/s':>8} {'% peak':>7}"]
    for name, r in result["backends"].items():
        tp = r["throughput"]
        lines.append(f"{name:<10} {r['latency']['median_ms']:>10.2f} {r['latency']['p95_ms']:>10.2f} "
                     f"{tp.get('32', float('nan')):>10.1f} {tp.get('64', float('nan')):>10.1f} "
                     f"{r['achieved_gflops']:>8.2f} {100 * r['fraction_of_peak']:>6.1f}%")
    return "\n".join(lines)
