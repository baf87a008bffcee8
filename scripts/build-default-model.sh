#!/usr/bin/env bash
# Build the shipped model models/default/ from the shared training data, reproducibly:
#   train (configs/default.yaml) → copy the bundle → temperature on the patient-grouped val →
#   ONNX export (fp32 + int8 if it passes its rule) → model card.  OOD is fitted by `pneumo train`.
# Usage: scripts/build-default-model.sh [RUN_DIR]   (env: PNEUMO_DATA to point at the dataset;
# PNEUMO_SKIP_TRAIN=1 to rebuild the bundle from an existing RUN_DIR without retraining;
# PNEUMO_OUT to write the bundle elsewhere than models/default).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUN=${1:-runs/default-final}
OUT=${PNEUMO_OUT:-models/default}

if [ "${PNEUMO_SKIP_TRAIN:-0}" != 1 ]; then
  "$BIN/pneumo" train --config configs/default.yaml --out "$RUN"
fi
test -f "$RUN/bundle/pneumo.json" || { echo "no bundle in $RUN" >&2; exit 2; }
grep -q '"ood"' "$RUN/bundle/pneumo.json" || { echo "$RUN/bundle has no OOD detector (trained with --no-ood?)" >&2; exit 2; }

rm -rf "$OUT.tmp" && mkdir -p "$(dirname "$OUT")"
cp -r "$RUN/bundle" "$OUT.tmp"
# Paths in the bundle: relative, so that it loads from any clone (data at ../shared/data/chest_xray
# relative to the repository, the documented fallback); the sha256 column is the real fingerprint.
"$BIN/python" - "$OUT.tmp" "$RUN" <<'PY'
import csv, hashlib, json, os, sys
from pathlib import Path
from pneumo.bundle import read_meta, update_meta
bundle, run = Path(sys.argv[1]), Path(sys.argv[2])
final = bundle.with_name(bundle.name.removesuffix(".tmp"))
man = bundle / "training_manifest.csv"
rows = list(csv.DictReader(man.open(newline="")))
for r in rows:
    r["path"] = os.path.relpath(r["path"], final.resolve())
with man.open("w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
meta = read_meta(bundle)
td, tr = dict(meta["training_data"]), dict(meta.get("training", {}))
td["source"] = os.path.relpath(td["source"], Path.cwd()) if os.path.isabs(td.get("source", "")) else td.get("source")
td["manifest_paths"] = ("relative to this bundle directory; fingerprint = sha256 of the run's manifest.csv "
                        "(same rows, absolute paths); each image's sha256 is in the sha256 column")
td["manifest_sha256"] = hashlib.sha256(man.read_bytes()).hexdigest()
tr["run_dir"] = os.path.relpath(tr.get("run_dir", str(run)), Path.cwd())
update_meta(bundle, training_data=td, training=tr)
print(json.dumps({"manifest_rows": len(rows), "source": td["source"], "run_dir": tr["run_dir"]}))
PY
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"

"$BIN/pneumo" calibrate "$OUT" --data "$RUN/manifest.csv" --split val
"$BIN/pneumo" export "$OUT" --data "$RUN/manifest.csv" --int8
# held-out figures for the card: the patient-grouped val (with patient-bootstrap CIs), never a test split
"$BIN/pneumo" evaluate "$OUT" --data "$RUN/manifest.csv" --split val --out "$RUN/eval-val"
"$BIN/pneumo" card "$OUT" --eval "$RUN/eval-val"
du -sh "$OUT"
