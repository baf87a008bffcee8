"""Peak RSS of a running ``pneumo serve`` for one upload of a small file that decodes large (issue 24
items 1-2): a 7071×7071 RGBA PNG (~200 KB) and a 7071×7071×16-bit RLE DICOM (~1.5 MB), plus the
largest of each the decoded-bytes limit accepts. The server's peak (``VmHWM``, reset through
``/proc/PID/clear_refs``, so run as the server's user or root, on its machine) minus its RSS before.

    pneumo serve BUNDLE --port 8000 & sleep 20
    python benchmarks/decode_memory.py --url http://127.0.0.1:8000 --pid $! [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bomb_support import rgba_png, rle_dicom  # noqa: E402

FILES = {
    "rgba_png_7071": lambda: (rgba_png(7071), "x.png", "image/png"),
    "rle_dicom_7071": lambda: (rle_dicom(7071), "x.dcm", "application/dicom"),
    "rgba_png_3535": lambda: (rgba_png(3535), "x.png", "image/png"),
    "rle_dicom_5000": lambda: (rle_dicom(5000), "x.dcm", "application/dicom"),
}


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def measure(url: str, pid: int, name: str) -> dict:
    data, fname, ctype = FILES[name]()
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = status_kb(pid, "VmRSS")
    r = httpx.post(url + "/api/v1/predict", files={"file": (fname, data, ctype)}, timeout=300)
    peak = status_kb(pid, "VmHWM")
    body = r.json()
    return {"file": name, "upload_kb": len(data) // 1024, "status": r.status_code,
            "code": body.get("error", {}).get("code") if r.status_code >= 400 else body.get("label"),
            "rss_rise_mb": round((peak - before) / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--pid", type=int, required=True, help="The server process (one worker).")
    ap.add_argument("--files", nargs="*", default=list(FILES), choices=list(FILES))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [measure(args.url, args.pid, name) for name in args.files]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['file']:16s} {row['upload_kb']:6d} KB → {row['status']} {row['code']}: "
                  f"server peak RSS +{row['rss_rise_mb']} MB")


if __name__ == "__main__":
    main()
