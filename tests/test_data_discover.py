"""Discovery on messy trees built from real images: Kaggle zip layout, junk, nested copy, manifests."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from pneumo.data import load_dataset, parse_patient, write_manifest
from pneumo.errors import DatasetError


@pytest.mark.parametrize(
    "name,expected",
    [
        ("person1946_bacteria_4874.jpeg", ("person1946", "bacteria", True)),
        ("person1000_virus_1681.jpeg", ("person1000", "virus", True)),
        ("IM-0115-0001.jpeg", ("IM-0115", None, True)),
        ("IM-0629-0001-0002.jpeg", ("IM-0629", None, True)),
        ("NORMAL2-IM-1427-0001.jpeg", ("NORMAL2-IM-1427", None, True)),
        ("scan_17.png", ("scan_17", None, False)),
    ],
)
def test_parse_patient(name, expected):
    assert parse_patient(name) == expected


@pytest.fixture(scope="module")
def real_images(data_root) -> dict[str, list[Path]]:
    """A few real images per class, chosen so that some patients have several images."""
    normal = sorted((data_root / "train" / "NORMAL").glob("IM-0*.jpeg"))[:6]
    pneu = sorted((data_root / "train" / "PNEUMONIA").glob("person1*_*.jpeg"))[:6]
    return {"NORMAL": normal, "PNEUMONIA": pneu}


def _populate(split_dir: Path, images: dict[str, list[Path]], take: slice) -> int:
    n = 0
    for cls, files in images.items():
        (split_dir / cls).mkdir(parents=True, exist_ok=True)
        for f in files[take]:
            shutil.copy(f, split_dir / cls / f.name)
            n += 1
    return n


def _kaggle_zip(root: Path, images) -> dict[str, int]:
    """The real Kaggle archive: chest_xray/{train,test,val}, a nested chest_xray/chest_xray copy, __MACOSX."""
    main = root / "chest_xray"
    counts = {"train": _populate(main / "train", images, slice(0, 4)),
              "val": _populate(main / "val", images, slice(4, 5)),
              "test": _populate(main / "test", images, slice(5, 6))}
    shutil.copytree(main / "train", main / "chest_xray" / "train")  # the nested duplicate
    shutil.copytree(main / "test", main / "chest_xray" / "test")
    (main / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (main / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (main / "train" / "NORMAL" / "Thumbs.db").write_bytes(b"x")
    (main / "train" / "PNEUMONIA" / "._person1_bacteria_1.jpeg").write_bytes(b"\0\5\26\7")
    mac = root / "__MACOSX" / "chest_xray" / "train" / "NORMAL"
    mac.mkdir(parents=True)
    (mac / "._IM-0115-0001.jpeg").write_bytes(b"\0\5\26\7")
    return counts


def test_kaggle_zip_layout(tmp_path, real_images):
    counts = _kaggle_zip(tmp_path, real_images)
    index = load_dataset(tmp_path)
    got = Counter(s.split for s in index.samples)
    assert dict(got) == counts  # nested copy not counted twice, junk not counted
    assert index.splits == ["train", "val", "test"]
    reasons = Counter(r.split(" ")[0] for _, r in index.skipped)
    assert reasons["junk"] == 5
    nested = [p for p, r in index.skipped if r.startswith("nested duplicate copy")]
    assert len(nested) == counts["train"] + counts["test"]
    assert any("nested copy" in n for n in index.notes)
    # the nested copy found from inside, too
    again = load_dataset(tmp_path / "chest_xray")
    assert Counter(s.split for s in again.samples) == got


def test_any_subset_of_splits_and_single_split(tmp_path, real_images):
    _populate(tmp_path / "ds" / "test", real_images, slice(0, 2))
    index = load_dataset(tmp_path / "ds")
    assert index.splits == ["test"] and len(index.samples) == 4
    _populate(tmp_path / "one", real_images, slice(0, 3))
    one = load_dataset(tmp_path / "one")
    assert {s.split for s in one.samples} == {None} and len(one.samples) == 6
    assert Counter(s.label for s in one.samples) == {0: 3, 1: 3}


def test_corrupt_empty_and_stray_files_are_listed(tmp_path, real_images):
    root = tmp_path / "ds"
    n = _populate(root / "train", real_images, slice(0, 2))
    (root / "train" / "NORMAL" / "IM-9999-0001.jpeg").write_bytes(b"")
    (root / "train" / "NORMAL" / "IM-9998-0001.jpeg").write_text("not an image")
    (root / "train" / "NORMAL" / "notes.txt").write_text("hello")
    shutil.copy(real_images["NORMAL"][0], root / "train" / "stray.jpeg")
    index = load_dataset(root)
    assert len(index.samples) == n
    reasons = dict((Path(p).name, r) for p, r in index.skipped)
    assert reasons["IM-9999-0001.jpeg"].startswith("empty file")
    assert "not an image" in reasons["IM-9998-0001.jpeg"]
    assert "not an image file name" in reasons["notes.txt"]
    assert "outside a NORMAL/PNEUMONIA folder" in reasons["stray.jpeg"]


def test_unknown_names_are_one_patient_each(tmp_path, real_images):
    root = tmp_path / "ds"
    for cls, files in real_images.items():
        (root / cls).mkdir(parents=True)
        for i, f in enumerate(files[:2]):
            shutil.copy(f, root / cls / f"scan_{i}.jpeg")  # same names in both classes
    index = load_dataset(root)
    assert len({s.group for s in index.samples}) == 4
    assert any("carry no patient id" in n for n in index.notes)


def test_manifest_round_trip_extra_columns_and_missing(tmp_path, dataset):
    samples = dataset.select("val")[:6]
    csv = write_manifest(samples, tmp_path / "m.csv")
    index = load_dataset(csv)
    assert index.source == "manifest" and [s.path for s in index.samples] == [s.path.resolve() for s in samples]
    assert [s.patient_id for s in index.samples] == [s.patient_id for s in samples]
    rel = tmp_path / "rel.csv"
    img = samples[0].path
    shutil.copy(img, tmp_path / img.name)
    rel.write_text(f"path,label,site\n{img.name},PNEUMONIA,A\nmissing.jpeg,0,B\n")
    index = load_dataset(rel)
    assert len(index.samples) == 1 and index.samples[0].extra == {"site": "A"}
    assert index.samples[0].patient_id == samples[0].patient_id
    assert "no such file" in index.skipped[0][1]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nx.jpeg,NORMAL\n")
    with pytest.raises(DatasetError, match="'path' and 'label'"):
        load_dataset(bad)
    bad.write_text(f"path,label\n{img},maybe\n")
    with pytest.raises(DatasetError, match="label 'maybe'"):
        load_dataset(bad)


def test_missing_root_and_empty_tree(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty" / "NORMAL").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        load_dataset(tmp_path / "empty")


def test_shared_dataset_counts_match_directory_listing(data_root, dataset):
    for split in ("train", "val"):
        for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
            listed = [p for p in (data_root / split / cls).iterdir() if p.suffix == ".jpeg"]
            assert sum(s.split == split and s.label == label for s in dataset.samples) == len(listed)
    assert not dataset.skipped


def test_discovery_admits_what_read_image_reads_and_skips_what_it_refuses(tmp_path, real_images):
    """One format table (pneumo.data.sniff): a preamble-less DICOM (no suffix, as PACS exports are) is a
    sample that read_image then reads; a BMP, which read_image refuses, is skipped with its reason."""
    import io

    import numpy as np
    from PIL import Image
    from pydicom.uid import ImplicitVRLittleEndian

    from dicom_support import bare_bytes, new_dataset
    from pneumo.data import read_image

    root = tmp_path / "ds"
    n = _populate(root / "train", real_images, slice(0, 2))
    gray = np.asarray(Image.open(real_images["NORMAL"][0]).convert("L").resize((128, 128)))
    ds = new_dataset("DX", ImplicitVRLittleEndian)
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = gray.tobytes()
    (root / "train" / "NORMAL" / "IM-9990-0001").write_bytes(bare_bytes(ds))
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="BMP")
    (root / "train" / "NORMAL" / "IM-9991-0001.bmp").write_bytes(buf.getvalue())
    index = load_dataset(root)
    names = {s.path.name for s in index.samples}
    assert len(index.samples) == n + 1 and "IM-9990-0001" in names
    pixels, meta = read_image(root / "train" / "NORMAL" / "IM-9990-0001")
    assert meta.format == "DICOM" and pixels.shape == (128, 128)
    reasons = dict((Path(p).name, r) for p, r in index.skipped)
    assert "BMP" in reasons["IM-9991-0001.bmp"] and "not an image pneumo reads" in reasons["IM-9991-0001.bmp"]
