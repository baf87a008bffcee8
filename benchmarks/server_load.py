"""Load test for a running ``pneumo serve``: bounded concurrency for a fixed time, from localhost.

Reports requests/s, latency p50/p95/p99, errors by status, and the server process's RSS at start and
end (read from /proc, so it must run on the server's machine). Not part of the test suite.

    pneumo serve BUNDLE --port 8000 &
    python benchmarks/server_load.py --url http://127.0.0.1:8000 --pid $! --images IMG_DIR \\
        --concurrency 16 --seconds 30 [--heatmap] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of ``pid`` and its children (uvicorn workers), in MiB; None if unknown."""
    if not pid:
        return None
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return round(total / 1024, 1)


def run(url: str, files: list[Path], concurrency: int, seconds: float, heatmap: bool,
        pid: int | None = None, rss_every: float = 5.0) -> dict:
    """Drive the server; also sample its RSS every ``rss_every`` s (a memory leak shows as a slope,
    a warm-up as a step that then stays level)."""
    payloads = [(f.name, f.read_bytes()) for f in files]
    order = itertools.cycle(range(len(payloads)))
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter = Counter()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while time.monotonic() < deadline:
                with lock:
                    name, data = payloads[next(order)]
                t0 = time.perf_counter()
                try:
                    r = client.post("/api/v1/predict", params={"heatmap": str(heatmap).lower()},
                                    files={"file": (name, data, "application/octet-stream")})
                    status = r.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    statuses[status] += 1
                    if status == 200:
                        latencies.append(dt)

    rss_series: list[tuple[float, float | None]] = []
    done = threading.Event()

    def sampler() -> None:
        while not done.wait(rss_every):
            rss_series.append((round(time.monotonic() - t_start, 1), rss_mb(pid)))

    t_start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    watcher = threading.Thread(target=sampler, daemon=True)
    if pid:
        watcher.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t_start
    done.set()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 1),
        "requests": sum(statuses.values()),
        "ok": statuses.get(200, 0),
        "requests_per_s": round(statuses.get(200, 0) / elapsed, 2),
        "latency_ms": {q: round(float(np.percentile(lat, int(q[1:]))), 1) for q in ("p50", "p95", "p99")},
        "errors": {str(k): v for k, v in statuses.items() if k != 200},
        "heatmap": heatmap,
        "rss_mb_series": rss_series,
    }


def wait_healthy(url: str, timeout: float = 120.0) -> None:
    """Wait for ``/api/v1/health`` to say ok (a server may still be loading its model)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/api/v1/health", timeout=5).json().get("status") == "ok":
                return
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url}: no healthy pneumo server after {timeout:.0f} s")
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--images", type=Path, required=True, help="Folder of JPEG/PNG/DICOM files (searched recursively).")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--pid", type=int, default=None, help="Server PID, for RSS memory (same machine only).")
    ap.add_argument("--heatmap", action="store_true")
    ap.add_argument("--rss-every", type=float, default=5.0, help="Seconds between RSS samples (with --pid).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png", ".dcm"))
    if not files:
        raise SystemExit(f"{args.images}: no images")
    wait_healthy(args.url)
    before = rss_mb(args.pid)
    out = run(args.url, files, args.concurrency, args.seconds, args.heatmap, args.pid, args.rss_every)
    out |= {"rss_mb_start": before, "rss_mb_end": rss_mb(args.pid), "n_images": len(files)}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    lat = out["latency_ms"]
    print(f"{out['ok']}/{out['requests']} ok in {out['seconds']} s at concurrency {out['concurrency']}: "
          f"{out['requests_per_s']} req/s; latency p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms")
    print(f"errors: {out['errors'] or 'none'}; server RSS {out['rss_mb_start']} → {out['rss_mb_end']} MiB")
    if out["rss_mb_series"]:
        print("RSS over the run (s: MiB): " + ", ".join(f"{t:g}: {m}" for t, m in out["rss_mb_series"]))


if __name__ == "__main__":
    main()
