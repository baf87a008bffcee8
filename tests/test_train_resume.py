"""Kill a run in its third epoch (os._exit in a subprocess), then `pneumo train --resume` it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pneumo.bundle import load_bundle

REPO = Path(__file__).resolve().parents[1]

CRASHING_RUN = """
import os, sys
import lightning as L
from pneumo.training.run import train

class Crash(L.Callback):
    # a hard kill after the first batch of epoch 2: epochs 0 and 1 are checkpointed, epoch 2 is lost
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 2:
            os._exit(17)

train(sys.argv[1], data=sys.argv[2], out=sys.argv[3], callbacks=[Crash()], progress=False,
      overrides=["train.epochs=3", "train.log_indices=true", "data.cache_file=false"])
"""


@pytest.mark.slow
def test_resume_after_a_crash_continues_from_the_saved_epoch(small_manifest, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", CRASHING_RUN, str(REPO / "configs/tiny.yaml"), str(small_manifest),
                           str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 17, proc.stderr[-2000:]
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "bundle").exists()
    assert not list(out.rglob("*.tmp")), "a temp file was left behind"
    epochs_before = {int(line.split()[0]) for line in (out / "indices_rank0.txt").read_text().splitlines()}
    assert epochs_before == {0, 1, 2}

    from pneumo.cli.train import train as cli

    r = CliRunner().invoke(cli, ["--resume", str(out), "--weights-only", "--json"])
    assert r.exit_code == 0, r.output
    lines = (out / "indices_rank0.txt").read_text().splitlines()
    epochs_after = [int(line.split()[0]) for line in lines]
    assert set(epochs_after) == {0, 1, 2} and epochs_after[-1] == 2
    assert epochs_after.count(1) == epochs_after.count(0)  # epoch 1 was not trained again
    assert epochs_after.count(2) == epochs_after.count(0) + 1  # epoch 2: one batch before the kill, then in full
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [0, 1, 2]
    run = json.loads((out / "run.json").read_text())
    assert [s["resumed"] for s in run["sessions"]] == [False, True]
    b = load_bundle(out / "bundle")
    assert b.meta["training"]["epochs"] == 3
    assert json.loads(r.stdout)["epochs"] == 3  # stdout is pure JSON: the progress bar went to stderr
