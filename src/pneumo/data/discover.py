"""Finding the images of a dataset: folder layouts, CSV manifests, patient ids from file names.

Supported inputs (``load_dataset``):
- ``ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*`` (the Kermany/Mendeley layout; any subset of splits);
- ``ROOT/{NORMAL,PNEUMONIA}/*`` (one split folder);
- a CSV manifest ``path,label[,split,patient_id,...]`` (paths relative to the CSV's folder or absolute).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pneumo.errors import DatasetError

CLASS_NAMES: tuple[str, str] = ("NORMAL", "PNEUMONIA")
SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".dcm", ".dicom", ".bmp", ".tif", ".tiff"}
JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
JUNK_DIRS = {"__macosx", ".git", ".ipynb_checkpoints"}

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

    def to_row(self) -> dict:
        row = asdict(self)
        row["path"] = str(self.path)
        row.update(row.pop("extra"))
        return row


@dataclass
class DatasetIndex:
    """The samples found under ``root``, plus what was skipped and why."""

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


def is_junk(path: Path) -> bool:
    name = path.name.lower()
    return name in JUNK_NAMES or name.startswith("._") or any(p.lower() in JUNK_DIRS for p in path.parts)


def _class_dirs(folder: Path) -> dict[int, Path]:
    found = {}
    for child in folder.iterdir() if folder.is_dir() else []:
        if child.is_dir() and child.name.upper() in CLASS_NAMES:
            found[CLASS_NAMES.index(child.name.upper())] = child
    return found


def _scan_class_dir(folder: Path, label: int, split: str | None, skipped: list) -> Iterable[Sample]:
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        if is_junk(path):
            skipped.append((str(path), "junk file"))
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((str(path), f"not an image suffix ({path.suffix or 'none'})"))
            continue
        if path.stat().st_size == 0:
            skipped.append((str(path), "empty file"))
            continue
        patient, pathogen, from_name = parse_patient(path.name)
        yield Sample(path, label, split, patient, pathogen, from_name)


def _find_layout_root(root: Path) -> Path:
    """Descend through a nested ``chest_xray/chest_xray`` copy to the folder holding splits or classes."""
    for candidate in (root, root / "chest_xray", root / root.name):
        if candidate.is_dir() and (_class_dirs(candidate) or any((candidate / s).is_dir() for s in SPLITS)):
            return candidate
    return root


def load_folders(root: Path) -> DatasetIndex:
    base = _find_layout_root(root)
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    if base != root:
        notes.append(f"dataset found in nested folder {base}")
    split_dirs = [(s, base / s) for s in SPLITS if (base / s).is_dir()]
    if split_dirs:
        for split, folder in split_dirs:
            for label, cdir in sorted(_class_dirs(folder).items()):
                samples.extend(_scan_class_dir(cdir, label, split, skipped))
    else:
        for label, cdir in sorted(_class_dirs(base).items()):
            samples.extend(_scan_class_dir(cdir, label, None, skipped))
    if not samples:
        raise DatasetError(
            f"{root}: no images found; expected ROOT/{{train,val,test}}/{{NORMAL,PNEUMONIA}}/*, "
            "ROOT/{NORMAL,PNEUMONIA}/* or a CSV manifest"
        )
    unnamed = sum(not s.patient_from_name for s in samples)
    if unnamed:
        notes.append(f"{unnamed} file names carry no patient id: each is treated as its own patient")
    return DatasetIndex(root, samples, skipped, notes, "folders")


def _parse_label(value: str, where: str) -> int:
    v = value.strip().upper()
    if v in ("1", "PNEUMONIA", "TRUE", "POSITIVE"):
        return 1
    if v in ("0", "NORMAL", "FALSE", "NEGATIVE"):
        return 0
    raise DatasetError(f"{where}: label {value!r} is not one of NORMAL/PNEUMONIA/0/1")


MANIFEST_CORE = ("path", "label", "split", "patient_id", "pathogen", "sha256")


def load_manifest(csv_path: Path) -> DatasetIndex:
    """Read a manifest CSV; extra columns are kept in ``Sample.extra`` (subgroups for evaluation)."""
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if "path" not in cols or "label" not in cols:
            raise DatasetError(f"{csv_path}: a manifest needs columns 'path' and 'label', found {cols}")
        rows = list(reader)
    samples = []
    for i, row in enumerate(rows, start=2):
        where = f"{csv_path}:{i}"
        p = Path(row["path"])
        if not p.is_absolute():
            p = csv_path.parent / p
        parsed_patient, parsed_pathogen, from_name = parse_patient(p.name)
        patient = (row.get("patient_id") or "").strip() or parsed_patient
        samples.append(
            Sample(
                path=p,
                label=_parse_label(row["label"], where),
                split=(row.get("split") or "").strip() or None,
                patient_id=patient,
                pathogen=(row.get("pathogen") or "").strip() or parsed_pathogen,
                patient_from_name=bool((row.get("patient_id") or "").strip()) or from_name,
                sha256=(row.get("sha256") or "").strip() or None,
                extra={k: v for k, v in row.items() if k not in MANIFEST_CORE and k is not None},
            )
        )
    if not samples:
        raise DatasetError(f"{csv_path}: the manifest lists no images")
    return DatasetIndex(csv_path, samples, [], [], "manifest")


def write_manifest(samples: Iterable[Sample], csv_path: Path) -> Path:
    """Write samples as a manifest CSV (absolute paths), readable by :func:`load_manifest`."""
    samples = list(samples)
    extra_cols = sorted({k for s in samples for k in s.extra})
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = csv_path.with_suffix(csv_path.suffix + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*MANIFEST_CORE, *extra_cols])
        for s in samples:
            w.writerow(
                [s.path.resolve(), CLASS_NAMES[s.label], s.split or "", s.patient_id, s.pathogen or "", s.sha256 or "",
                 *(s.extra.get(c, "") for c in extra_cols)]
            )
    tmp.replace(csv_path)
    return csv_path


def load_dataset(root_or_manifest: str | Path) -> DatasetIndex:
    """Discover a dataset from a folder or a ``.csv`` manifest; a clear error if there is none."""
    p = Path(root_or_manifest)
    if not p.exists():
        raise DatasetError(f"{p}: no such dataset folder or manifest")
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise DatasetError(f"{p}: a dataset is a folder or a .csv manifest")
        return load_manifest(p)
    return load_folders(p)
