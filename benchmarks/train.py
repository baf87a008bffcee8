"""Train one config on the full training set and print one table of what it cost and what it reached.

    .venv/bin/python benchmarks/train.py --config configs/default.yaml --out runs/bench-default
    .venv/bin/python benchmarks/train.py --summarise runs/seed-cnn runs/default   # existing runs only

Figures come from the run's bundle: wall time (all sessions), epochs run, best epoch (by val AUROC),
and AUROC / accuracy / sensitivity / specificity at the operating point on the patient-grouped
validation split carved from train (never the official test split). Add --json for a machine copy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pneumo.training.run import summary, train

COLUMNS = [("run", "{}"), ("wall_time_s", "{:.0f}"), ("epochs", "{}"), ("best_epoch", "{}"), ("val_auroc", "{:.4f}"),
           ("val_accuracy", "{:.4f}"), ("val_sensitivity", "{:.4f}"), ("val_specificity", "{:.4f}"),
           ("n_train", "{}"), ("n_val", "{}")]


def table(rows: list[dict]) -> str:
    cells = [[name for name, _ in COLUMNS]]
    for r in rows:
        cells.append([fmt.format(r[name]) if r.get(name) is not None else "-" for name, fmt in COLUMNS])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="YAML config to train")
    ap.add_argument("--data", type=Path, default=None, help="dataset folder or manifest (default: resolve_data)")
    ap.add_argument("--out", type=Path, default=None, help="run directory")
    ap.add_argument("--summarise", nargs="+", type=Path, default=[], help="existing run directories to tabulate")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)
    runs = list(args.summarise)
    if args.config:
        bundle = train(args.config, data=args.data, out=args.out, overrides=args.overrides)
        if int(os.environ.get("RANK", 0)) != 0:
            return 0
        runs.append(bundle.parent)
    if not runs:
        ap.error("give --config to train, or --summarise RUN_DIR ...")
    rows = [{"run": str(r), **summary(r / "bundle")} for r in runs]
    print(json.dumps(rows, indent=2, default=str) if args.json else table(rows))
    print(f"(cpu cores: {os.cpu_count()}; wall times include any contention from other processes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
