# pneumo: two commands. `make run` serves the shipped model; `make test` lints and runs every test.
# Both create .venv on first use (torch pinned first, so no CUDA build is pulled) and are quick after.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test setup lint browser orthanc clean model

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

# Debian's Chromium and its driver for the browser tests (never `playwright install`).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium chromium-driver' (browser tests will be skipped)"; fi; }

# Debian's Orthanc, the real PACS the dicom-node tests run against (each test starts its own on 127.0.0.1),
# dcmtk's storescu (a real sender) and dicom3tools' dciodvfy (validates every object the node makes).
orthanc:
	@{ command -v Orthanc >/dev/null 2>&1 || test -x /usr/sbin/Orthanc; } && command -v storescu >/dev/null 2>&1 \
	  && command -v dciodvfy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc dcmtk dicom3tools >/dev/null; \
	  else echo "orthanc/dcmtk/dicom3tools missing: run 'sudo apt-get install orthanc dcmtk dicom3tools' (dicom-node tests will be skipped)"; fi; }

run: setup
	$(BIN)/pneumo serve --host $(HOST) --port $(PORT)

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

test: setup browser orthanc lint
	$(BIN)/python -m pytest -q

# Train and package the shipped model models/default/ (≤ 30 min on 2 cores): see scripts/build-default-model.sh.
model: setup
	scripts/build-default-model.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
