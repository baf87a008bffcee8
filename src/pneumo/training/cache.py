"""Decode every training image once: resized ``[0, 1]`` pixels kept as uint8, in RAM and on disk.

``read_image`` → ``resize_image`` (the geometric half of ``preprocess``) is run once per image; the
result is quantised to uint8 (error ≤ 1/510, 4× less RAM than float32: the full training set at 224²
is ~260 MB) and normalised on the fly by :func:`normalise_batch`, which equals ``preprocess``'s
intensity step. A cache file under ``data.cache_dir`` is keyed by every file's path, size and mtime
plus the resize rule and size, so later runs never decode a JPEG again; it is written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from tqdm.auto import tqdm

from pneumo.bundle import atomic_write_bytes, atomic_write_json
from pneumo.data import PreprocessSpec, Sample, read_image
from pneumo.data.preprocess import EQ_BINS, ResizeRule, resize_image

SERIAL_BELOW = 256  # fewer images than this: a process pool costs more than it saves


def cache_key(samples: Sequence[Sample], spec: PreprocessSpec) -> str:
    """Hash of (path, size, mtime) of every file and the geometric part of the spec."""
    h = hashlib.sha256(f"v2|{spec.size}|{spec.resize}".encode())  # v2: JPEGs larger than 2×size DCT-scaled
    for s in samples:
        st = Path(s.path).stat()
        h.update(f"|{Path(s.path).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def _decode(args: tuple[str, int, str]) -> tuple[np.ndarray, str]:
    path, size, rule = args
    pixels, meta = read_image(path, target=size)  # as the predictor reads a path: the same pixels
    resized = resize_image(pixels, size, cast(ResizeRule, rule))
    return np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8), meta.sha256


def decode_all(
    samples: Sequence[Sample], spec: PreprocessSpec, workers: int = 2, progress: bool = True
) -> tuple[np.ndarray, list[str]]:
    """``N×S×S`` uint8 resized pixels and each file's sha256, decoded in a small process pool."""
    jobs = [(str(s.path), spec.size, spec.resize) for s in samples]
    out = np.empty((len(jobs), spec.size, spec.size), dtype=np.uint8)
    shas: list[str] = []
    bar = tqdm(total=len(jobs), desc="decoding images", unit="img", disable=not progress, mininterval=2.0)
    results: Iterator[tuple[np.ndarray, str]]
    if workers <= 1 or len(jobs) < SERIAL_BELOW:
        results = map(_decode, jobs)
        pool = None
    else:
        # spawn, not fork: the parent already runs torch's thread pools.
        pool = mp.get_context("spawn").Pool(workers)
        results = pool.imap(_decode, jobs, chunksize=32)
    try:
        for i, (arr, sha) in enumerate(results):
            out[i] = arr
            shas.append(sha)
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return out, shas


def load_or_decode(
    samples: Sequence[Sample],
    spec: PreprocessSpec,
    cache_dir: Path | None,
    workers: int = 2,
    progress: bool = True,
) -> tuple[torch.Tensor, list[str]]:
    """``N×1×S×S`` uint8 tensor and sha256s, from the cache file when it matches, else decoded."""
    if not samples:
        return torch.zeros((0, 1, spec.size, spec.size), dtype=torch.uint8), []
    arr = shas = None
    if cache_dir is not None:
        key = cache_key(samples, spec)
        arr_path, sha_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
        if arr_path.exists() and sha_path.exists():
            try:
                arr = np.load(arr_path, allow_pickle=False)
                shas = json.loads(sha_path.read_text())["sha256"]
                if arr.shape != (len(samples), spec.size, spec.size) or len(shas) != len(samples):
                    arr = shas = None
            except (OSError, ValueError, KeyError):
                arr = shas = None
    if arr is None:
        arr, shas = decode_all(samples, spec, workers, progress)
        if cache_dir is not None:
            _write_cache(arr, shas, arr_path, sha_path)
    assert shas is not None  # read with the cached array or decoded with it
    return torch.from_numpy(np.ascontiguousarray(arr)).unsqueeze(1), list(shas)


def _write_cache(arr: np.ndarray, shas: list[str], arr_path: Path, sha_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(arr_path, buf.getvalue())
    atomic_write_json(sha_path, {"sha256": shas})


def normalise_batch(x: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 (or [0, 1] float) ``B×1×S×S`` → float32 model input, exactly ``preprocess``'s intensity step."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    if spec.equalise:
        x = equalise_batch(x)
    if spec.normalise == "zscore":
        return (x - spec.mean) / spec.std
    return x


def equalise_batch(x: torch.Tensor) -> torch.Tensor:
    """``B×1×H×W`` in ``[0, 1]`` → per-image mid-rank CDF values, as ``data.preprocess.equalise_hist``."""
    b = x.shape[0]
    q = (x.reshape(b, -1) * EQ_BINS).long().clamp_(0, EQ_BINS - 1)
    hist = torch.zeros(b, EQ_BINS, dtype=torch.float64).scatter_add_(1, q, torch.ones_like(q, dtype=torch.float64))
    cdf = (hist.cumsum(1) - 0.5 * hist) / q.shape[1]
    return cdf.gather(1, q).to(torch.float32).reshape(x.shape)
