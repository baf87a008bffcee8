#!/usr/bin/env bash
# Build the shipped model models/default/ from the shared training data, reproducibly: one call to the
# bundle workflow (pneumo.workflows.bundle.make_bundle): train every member of the recipe, combine,
# fit the OOD detector and the chest-X-ray gate, calibrate, export ONNX (+ int8 when it passes),
# evaluate on the patient-grouped val, write the card, make manifest paths relative.
# Usage: scripts/build-default-model.sh [RUNS_DIR]   (env: PNEUMO_DATA for the dataset, PNEUMO_EXTERNAL for
# the gate's external development images, PNEUMO_OUT to write the bundle elsewhere than models/default).
# Finished members in RUNS_DIR are reused (training is deterministic), so a rebuild after a change to the
# finishing steps takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
# the gate's other-source images: $PNEUMO_EXTERNAL, else the documented ../shared/data/external_dev beside the clone
export PNEUMO_EXTERNAL=${PNEUMO_EXTERNAL:-../shared/data/external_dev}
"$BIN/pneumo" build configs/recipes/default.yaml --out "${PNEUMO_OUT:-models/default}" --runs "${1:-runs/default}"
du -sh "${PNEUMO_OUT:-models/default}"
