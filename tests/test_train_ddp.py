"""`pneumo train` under torchrun: 2 CPU processes (gloo) train on disjoint shards; rank 0 writes the bundle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pneumo.bundle import load_bundle

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ddp_two_cpu_ranks(small_manifest, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    pneumo = Path(sys.executable).with_name("pneumo")
    if not torchrun.exists() or not pneumo.exists():
        pytest.skip("torchrun / pneumo entry points not installed next to this interpreter")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "--no-python", str(pneumo), "train",
           "--config", str(REPO / "configs/tiny.yaml"), "--data", str(small_manifest), "--out", str(out),
           "--weights-only", "train.log_indices=true", "data.cache_file=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    seen: dict[int, dict[int, set[int]]] = {}
    for rank in (0, 1):
        for line in (out / f"indices_rank{rank}.txt").read_text().splitlines():
            epoch, *idx = map(int, line.split())
            seen.setdefault(epoch, {}).setdefault(rank, set()).update(idx)
    n_train = sum(1 for line in (out / "manifest.csv").read_text().splitlines()[1:] if ",train," in line)
    assert sorted(seen) == [0, 1]
    for epoch, per_rank in seen.items():
        assert set(per_rank) == {0, 1}, f"epoch {epoch}: a rank trained on nothing"
        assert not per_rank[0] & per_rank[1], f"epoch {epoch}: ranks saw the same images"
        assert len(per_rank[0] | per_rank[1]) >= n_train - 2 * 16  # all but the dropped last partial batches
    b = load_bundle(out / "bundle")
    assert b.meta["training"]["epochs"] == 2 and b.meta["training_data"]["n_images"] == n_train
    assert proc.stdout.count("bundle:") == 1  # only rank 0 reports
    shutil.rmtree(out / "checkpoints")
