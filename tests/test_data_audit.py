"""The audit on a messy tree of real images (counts checked against the directory listing), the CLI,
the full shared set (slow), and the HTML report in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pneumo.cli.data import data as data_cli
from pneumo.data.audit import run_audit
from pneumo.data.audit_report import write_outputs


def _listing(root: Path) -> dict[str, dict[str, int]]:
    """Counts computed independently of pneumo: decodable images per split/class by plain Pillow."""
    out: dict[str, dict[str, int]] = {}
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for cls in ("NORMAL", "PNEUMONIA"):
            n = 0
            for f in (split_dir / cls).iterdir():
                try:
                    with Image.open(f) as im:
                        im.load()
                    n += 1
                except Exception:  # noqa: BLE001 - anything Pillow cannot decode is not counted
                    pass
            out.setdefault(split_dir.name, {})[cls] = n
    return out


@pytest.fixture(scope="module")
def messy(tmp_path_factory, data_root) -> Path:
    """train/val of real images + a cross-split copy, a re-encoded near-duplicate, a truncated file,
    junk, and NORMAL films padded wider than PNEUMONIA ones in val (a size shortcut)."""
    root = tmp_path_factory.mktemp("messy") / "ds"
    src = data_root / "train"
    normal = sorted((src / "NORMAL").glob("IM-*.jpeg"))[:10]
    pneu = sorted((src / "PNEUMONIA").glob("person1*.jpeg"))[:14]
    for split, sl in (("train", slice(0, 6)), ("val", slice(6, 10))):
        for cls, files in (("NORMAL", normal[sl]), ("PNEUMONIA", pneu[sl])):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for f in files:
                if split == "val" and cls == "NORMAL":  # wide NORMAL films: aspect separates the classes
                    im = Image.open(f).convert("L")
                    wide = Image.new("L", (320, 224))
                    wide.paste(im, (48, 0))
                    wide.save(root / split / cls / f.name, quality=95)
                else:
                    shutil.copy(f, root / split / cls / f.name)
    shutil.copy(src / "PNEUMONIA" / pneu[0].name, root / "val" / "PNEUMONIA" / "copy_of_train.jpeg")
    Image.open(pneu[1]).resize((200, 200)).save(root / "val" / "PNEUMONIA" / "reencoded.png")
    data = (src / "PNEUMONIA" / pneu[2].name).read_bytes()
    (root / "train" / "PNEUMONIA" / "person9999_virus_1.jpeg").write_bytes(data[: len(data) // 3])
    (root / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "train" / "NORMAL" / "IM-9999-0001.jpeg").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def messy_audit(messy):
    return run_audit(messy, workers=1, progress=False)


def test_counts_match_listing(messy, messy_audit):
    s = messy_audit.summary
    listing = _listing(messy)
    got = {split: {c: s["counts"][split][c] for c in ("NORMAL", "PNEUMONIA")} for split in s["counts"]}
    assert got == listing
    names = [p.name for p in (messy / "train" / "PNEUMONIA").iterdir() if p.name != "person9999_virus_1.jpeg"]
    assert s["pathogens"]["train"].get("bacteria", 0) == sum("_bacteria_" in n for n in names)
    assert s["pathogens"]["train"].get("virus", 0) == sum("_virus_" in n for n in names)


def test_problems_are_found(messy_audit):
    s = messy_audit.summary
    unreadable = [Path(u["path"]).name for u in s["unreadable"]]
    assert unreadable == ["person9999_virus_1.jpeg"]
    skipped = {Path(u["path"]).name: u["reason"] for u in s["skipped"]}
    assert set(skipped) == {".DS_Store", "IM-9999-0001.jpeg"}
    cross = [g for g in s["exact_duplicates"] if g["cross_split"]]
    assert len(cross) == 1 and {Path(p).name for p in cross[0]["paths"]} >= {"copy_of_train.jpeg"}
    near = s["near_duplicates"]["pairs"]
    assert any(d["cross_split"] and "reencoded.png" in (d["a"] + d["b"]) for d in near), near
    # only the planted copies: distinct films of different patients are not near-duplicates
    assert all("reencoded.png" in d["a"] + d["b"] for d in near)
    assert s["shortcuts"]["val"]["aspect"] > 0.7 and s["shortcuts"]["train"]["aspect"] == 0.5
    assert any("shortcut risk in val: image aspect" in w for w in s["warnings"])
    assert not any("shortcut risk in train" in w for w in s["warnings"])
    # same personN in train and val: reported, flagged weak
    leaks = s["patient_ids_in_several_splits"]["ids"]
    assert all(d["weak"] == d["patient_id"].startswith("person") for d in leaks)


def test_patient_stats(messy, messy_audit):
    from pneumo.data import parse_patient

    p = messy_audit.summary["patients"]["train"]
    files = [f for c in ("NORMAL", "PNEUMONIA") for f in (messy / "train" / c).iterdir()
             if f.suffix == ".jpeg" and f.stat().st_size and f.name != "person9999_virus_1.jpeg"]
    assert p["patients"] == len({parse_patient(f.name)[0] for f in files})
    assert sum(int(k) * v for k, v in p["images_per_patient"]["histogram"].items()) == len(files)


def test_cli_json_and_outputs(messy, tmp_path):
    out = tmp_path / "audit"
    res = CliRunner().invoke(data_cli, ["audit", str(messy), "--out", str(out), "--json", "--workers", "1"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    on_disk = json.loads((out / "audit.json").read_text())
    assert doc["counts"] == on_disk["counts"] and len(on_disk["files"]) == doc["n_images"]
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)  # nothing external
    for b64 in re.findall(r'src="data:image/png;base64,([^"]+)"', html):
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    res = CliRunner().invoke(data_cli, ["audit", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not found" in res.output


def test_cli_split_writes_a_loadable_manifest(messy, tmp_path):
    from pneumo.data import load_dataset

    out = tmp_path / "split.csv"
    res = CliRunner().invoke(data_cli, ["split", str(messy), "--out", str(out), "--val", "0.3", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["patients_in_several_splits"] == []
    index = load_dataset(out)
    assert {s.split for s in index.samples} == {"train", "val", "test", "val_official"}
    assert all(s.sha256 and len(s.sha256) == 64 for s in index.samples)


@pytest.mark.slow
def test_full_shared_set(data_root, tmp_path):
    """The whole shared set's audit (its time budget, 60 s, is benchmarks/timing_checks.py --only audit)."""
    res = CliRunner().invoke(data_cli, ["audit", str(data_root), "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    listing = {split: {c: len(list((data_root / split / c).glob("*.jpeg"))) for c in ("NORMAL", "PNEUMONIA")}
               for split in ("train", "val")}
    assert {k: {c: v[c] for c in ("NORMAL", "PNEUMONIA")} for k, v in s["counts"].items()} == listing
    names = [p.name for p in (data_root / "train" / "PNEUMONIA").glob("*.jpeg")]
    assert s["pathogens"]["train"] == {"bacteria": sum("_bacteria_" in n for n in names),
                                       "virus": sum("_virus_" in n for n in names)}
    for split in ("train", "val"):
        ids = {re.match(r"^(person\d+|(?:NORMAL2-)?IM-\d+)", p.name).group(1).lower()
               for p in (data_root / split).glob("*/*.jpeg")}
        assert s["patients"][split]["patients"] == len(ids)
    assert s["unreadable"] == [] and s["n_images"] == 5232
    assert s["image_stats"]["val/NORMAL"]["width"]["max"] > 224  # originals kept their size


@pytest.mark.browser
def test_report_renders_in_chromium(messy_audit, tmp_path, chromium):
    paths = write_outputs(messy_audit, tmp_path)
    page = chromium.new_page(viewport={"width": 1300, "height": 900})
    try:
        page.goto(paths["html"].as_uri())
        page.wait_for_load_state("load")
        widths = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    finally:
        page.close()
    assert len(widths) >= 3 + 2 * 4  # three figures + image/edge pairs
    assert all(complete and w > 0 for _, complete, w in widths), widths
    assert np.asarray(Image.open(tmp_path / "report.png")).std() > 10  # not a blank page
