"""Finding the images of a dataset: folder layouts, CSV manifests, patient ids from file names.

Supported inputs (``load_dataset``):
- ``ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*`` (the Kermany/Mendeley layout; any subset of splits;
  any other folder holding NORMAL/PNEUMONIA is a split of that name);
- ``ROOT/{NORMAL,PNEUMONIA}/*`` (one split folder);
- the raw Kaggle download: ``ROOT/chest_xray/...`` with ``__MACOSX/`` and a nested ``chest_xray/chest_xray``
  copy (the copy is detected, compared with the main tree and never counted twice);
- a CSV manifest ``path,label[,split,patient_id,pathogen,sha256,...]`` (see :mod:`pneumo.data.manifest`).

Nothing is dropped silently: junk (``.DS_Store``, ``Thumbs.db``, ``._*``, ``__MACOSX/``), empty files,
files whose bytes are not an image, images outside a class folder and the nested copy are listed in
:attr:`DatasetIndex.skipped` with a reason. Files that look like images but fail to decode are found by
the audit (``pneumo data audit``), which decodes everything.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pneumo.data.sniff import ACCEPTED, IMAGE_SUFFIXES, sniff_file
from pneumo.errors import DatasetError

CLASS_NAMES: tuple[str, str] = ("NORMAL", "PNEUMONIA")
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_ALIASES = {"training": "train", "validation": "val", "valid": "val", "testing": "test"}
JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
JUNK_DIRS = {"__macosx", ".git", ".ipynb_checkpoints", ".trash", "$recycle.bin"}

_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.IGNORECASE)
_IM = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``label`` is 1 for PNEUMONIA, 0 for NORMAL.

    ``patient_id`` is as parsed from the file name; file-name ids are unique within a split only,
    so group by :attr:`group` (split-qualified) when splitting or checking leakage.
    """

    path: Path
    label: int
    split: str | None = None
    patient_id: str = ""
    pathogen: str | None = None
    patient_from_name: bool = True
    sha256: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]

    @property
    def group(self) -> str:
        return f"{self.split or ''}:{self.patient_id}"


@dataclass
class DatasetIndex:
    """The samples found under ``root``, plus what was skipped (``(path, reason)``) and notes."""

    root: Path
    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = "folders"

    def select(self, split: str | None) -> list[Sample]:
        """Samples of one split (``None`` → all)."""
        if split is None:
            return list(self.samples)
        return [s for s in self.samples if s.split == split]

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples if s.split}, key=_split_order)


def _split_order(name: str) -> tuple[int, str]:
    return (SPLITS.index(name) if name in SPLITS else len(SPLITS), name)


def parse_patient(filename: str) -> tuple[str, str | None, bool]:
    """File name → (patient id, pathogen or None, whether the id came from the name).

    ``person1946_bacteria_4874.jpeg`` → ``("person1946", "bacteria", True)``;
    ``IM-0115-0001.jpeg`` → ``("IM-0115", None, True)``;
    ``NORMAL2-IM-1427-0001.jpeg`` → ``("NORMAL2-IM-1427", None, True)``;
    anything else is its own patient: ``(stem, None, False)``.
    """
    stem = Path(filename).stem
    m = _PERSON.match(stem)
    if m:
        return m.group(1).lower(), m.group(2).lower(), True
    m = _IM.match(stem)
    if m:
        return m.group(1).upper(), None, True
    return stem, None, False


def is_junk(path: Path, root: Path | None = None) -> bool:
    """OS litter: ``.DS_Store``, ``Thumbs.db``, AppleDouble ``._*`` files, anything under ``__MACOSX/``."""
    name = path.name.lower()
    parts = path.relative_to(root).parts if root is not None and path.is_relative_to(root) else path.parts
    return name in JUNK_NAMES or name.startswith("._") or any(p.lower() in JUNK_DIRS for p in parts[:-1])


def _class_dirs(folder: Path) -> dict[int, Path]:
    found = {}
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        if child.is_dir() and child.name.upper() in CLASS_NAMES:
            found[CLASS_NAMES.index(child.name.upper())] = child
    return found


def _split_dirs(folder: Path) -> list[tuple[str, Path]]:
    """Child folders that hold NORMAL/PNEUMONIA, named by split (train/val/test first)."""
    out = []
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        if child.is_dir() and child.name.lower() not in JUNK_DIRS and _class_dirs(child):
            name = child.name.lower()
            out.append((SPLIT_ALIASES.get(name, name), child))
    return sorted(out, key=lambda t: _split_order(t[0]))


def _has_layout(folder: Path) -> bool:
    return bool(_class_dirs(folder) or _split_dirs(folder))


def _find_layout_root(root: Path) -> Path:
    """The folder holding splits or classes: ``root`` itself, else ``root/chest_xray`` (the Kaggle zip)."""
    for candidate in (root, root / "chest_xray", root / root.name):
        if candidate.is_dir() and _has_layout(candidate):
            return candidate
    return root


def _walk(root: Path) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        files.extend(Path(dirpath) / f for f in sorted(filenames))
    return files


def _nested_copies(base: Path) -> list[Path]:
    """Sub-folders of ``base`` that are themselves a whole dataset (``chest_xray/chest_xray``)."""
    return [c for c in sorted(base.iterdir()) if c.is_dir() and c.name.lower() not in JUNK_DIRS and _split_dirs(c)]


def _check_file(path: Path, base: Path) -> str | None:
    """Reason to skip a file under a class folder, or None when it looks like an image."""
    if is_junk(path, base):
        return "junk file (OS metadata)"
    if path.suffix and path.suffix.lower() not in IMAGE_SUFFIXES:  # no suffix: PACS exports, read by content
        return f"not an image file name ({path.suffix})"
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if size == 0:
        return "empty file (0 bytes)"
    kind = sniff_file(path)  # what read_image reads, by the same table: no BMP/TIFF that training would refuse
    if kind not in ACCEPTED:
        return "content is not an image pneumo reads (JPEG, PNG or DICOM)" + ("" if kind == "unknown" else f": {kind}")
    return None


def _make_samples(files: list[Path], label: int, split: str | None, base: Path, skipped: list) -> list[Sample]:
    samples = []
    for path in files:
        reason = _check_file(path, base)
        if reason:
            skipped.append((str(path), reason))
            continue
        patient, pathogen, from_name = parse_patient(path.name)
        samples.append(Sample(path, label, split, patient, pathogen, from_name))
    return samples


def _unique_unnamed(samples: list[Sample], base: Path) -> list[Sample]:
    """Files without a patient id in their name are one patient each, even when stems collide."""
    stems = Counter((s.split, s.patient_id) for s in samples if not s.patient_from_name)
    out = []
    for s in samples:
        if not s.patient_from_name and stems[(s.split, s.patient_id)] > 1:
            rel = s.path.relative_to(base).with_suffix("").as_posix()
            s = Sample(s.path, s.label, s.split, rel, s.pathogen, False, s.sha256, s.extra)
        out.append(s)
    return out


def _compare_copy(copy: Path, base: Path, files: list[Path], skipped: list) -> str:
    same = 0
    for f in files:
        twin = base / f.relative_to(copy)
        if is_junk(f, copy):
            skipped.append((str(f), "junk file (OS metadata)"))
        elif twin.is_file() and twin.stat().st_size == f.stat().st_size:
            same += 1
            skipped.append((str(f), f"nested duplicate copy of {twin}"))
        else:
            skipped.append((str(f), f"only in the nested copy {copy.name}/ (not in the main tree; not used)"))
    return f"nested copy {copy} ignored: {same} of {len(files)} files duplicate the main tree"


def load_folders(root: Path) -> DatasetIndex:
    """Index a folder layout; see the module docstring for what is accepted and what is skipped."""
    base = _find_layout_root(root)
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    if base != root:
        notes.append(f"dataset found in nested folder {base}")
    claimed: set[Path] = set()
    groups: list[tuple[str | None, Path]] = [*_split_dirs(base)] or [(None, base)]
    for split, sdir in groups:
        for label, cdir in _class_dirs(sdir).items():
            files = _walk(cdir)
            claimed.update(files)
            samples.extend(_make_samples(files, label, split, base, skipped))
    for copy in _nested_copies(base):
        files = _walk(copy)
        claimed.update(files)
        notes.append(_compare_copy(copy, base, files, skipped))
    for f in _walk(root):
        if f in claimed:
            continue
        if is_junk(f, root):
            skipped.append((str(f), "junk file (OS metadata)"))
        elif f.suffix.lower() in IMAGE_SUFFIXES:
            skipped.append((str(f), "image outside a NORMAL/PNEUMONIA folder (label unknown)"))
    if not samples:
        raise DatasetError(
            f"{root}: no images found; expected ROOT/{{train,val,test}}/{{NORMAL,PNEUMONIA}}/*, "
            "ROOT/{NORMAL,PNEUMONIA}/* or a CSV manifest"
        )
    samples = _unique_unnamed(samples, base)
    unnamed = sum(not s.patient_from_name for s in samples)
    if unnamed:
        notes.append(f"{unnamed} file names carry no patient id: each is treated as its own patient")
    if skipped:
        notes.append(f"{len(skipped)} files skipped (see skipped for each reason)")
    return DatasetIndex(root, samples, skipped, notes, "folders")
