"""The one atomic-write helper: a finished file or the old one, never half of either, readable by others."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from pneumo.fsutil import FILE_MODE, atomic_write_bytes, atomic_write_json


def test_write_replaces_whole_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_json(target, {"a": np.float32(0.5), "p": tmp_path})
    assert json.loads(target.read_text()) == {"a": 0.5, "p": str(tmp_path)}
    assert stat.S_IMODE(os.stat(target).st_mode) == FILE_MODE
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]  (fails inside the write)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
