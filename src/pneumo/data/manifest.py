"""CSV manifests: the portable form of a dataset (``pneumo data split`` writes one).

Columns: ``path,label`` required; ``split,patient_id,pathogen,sha256`` optional; any other column is
kept in :attr:`Sample.extra` (subgroups for evaluation). ``label`` is NORMAL/PNEUMONIA or 0/1. Relative
paths are relative to the CSV's folder. A manifest is accepted anywhere a dataset folder is.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path

from pneumo.data.discover import CLASS_NAMES, DatasetIndex, Sample, parse_patient
from pneumo.errors import DatasetError
from pneumo.fsutil import atomic_write_text

MANIFEST_CORE = ("path", "label", "split", "patient_id", "pathogen", "sha256")


def _parse_label(value: str | None, where: str) -> int:
    v = (value or "").strip().upper()
    if v in ("1", "PNEUMONIA", "TRUE", "POSITIVE"):
        return 1
    if v in ("0", "NORMAL", "FALSE", "NEGATIVE"):
        return 0
    raise DatasetError(f"{where}: label {value!r} is not one of NORMAL/PNEUMONIA/0/1")


def _row_sample(row: dict, csv_path: Path, where: str) -> Sample:
    raw = (row.get("path") or "").strip()
    if not raw:
        raise DatasetError(f"{where}: empty path")
    p = Path(raw).expanduser()
    if not p.is_absolute():
        p = csv_path.parent / p
    parsed_patient, parsed_pathogen, from_name = parse_patient(p.name)
    given = (row.get("patient_id") or "").strip()
    return Sample(
        path=p,
        label=_parse_label(row.get("label"), where),
        split=(row.get("split") or "").strip() or None,
        patient_id=given or parsed_patient,
        pathogen=(row.get("pathogen") or "").strip() or parsed_pathogen,
        patient_from_name=bool(given) or from_name,
        sha256=(row.get("sha256") or "").strip().lower() or None,
        extra={k: v for k, v in row.items() if k not in MANIFEST_CORE and k is not None},
    )


def load_manifest(csv_path: Path) -> DatasetIndex:
    """Read a manifest CSV. Rows naming a missing file or repeating a path are skipped with a reason."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = cols
            if "path" not in cols or "label" not in cols:
                raise DatasetError(f"{csv_path}: a manifest needs columns 'path' and 'label', found {cols}")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path}: not a readable CSV manifest ({exc})") from exc
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for i, row in enumerate(rows, start=2):
        s = _row_sample(row, csv_path, f"{csv_path}:{i}")
        if s.path in seen:
            skipped.append((str(s.path), f"listed again on line {i}"))
        elif not s.path.is_file():
            skipped.append((str(s.path), f"no such file (line {i})"))
        else:
            seen.add(s.path)
            samples.append(s)
    if not samples:
        raise DatasetError(f"{csv_path}: the manifest lists no existing images ({len(rows)} rows)")
    notes = [f"{len(skipped)} manifest rows skipped (see skipped)"] if skipped else []
    return DatasetIndex(csv_path, samples, skipped, notes, "manifest")


def write_manifest(samples: Iterable[Sample], csv_path: Path, relative_to: Path | None = None) -> Path:
    """Write samples as a manifest CSV, readable by :func:`load_manifest`; atomic.

    Paths are absolute, or relative to ``relative_to`` (a shipped bundle's own folder, so that it
    loads from any clone: :func:`load_manifest` resolves them against the CSV's folder).
    """
    samples = list(samples)
    extra_cols = sorted({k for s in samples for k in s.extra if k not in MANIFEST_CORE})
    csv_path = Path(csv_path)
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow([*MANIFEST_CORE, *extra_cols])
    for s in samples:
        w.writerow(
            [s.path.resolve() if relative_to is None
             else os.path.relpath(s.path.resolve(), Path(relative_to).resolve()),
             CLASS_NAMES[s.label], s.split or "", s.patient_id, s.pathogen or "", s.sha256 or "",
             *(s.extra.get(c, "") for c in extra_cols)]
        )
    atomic_write_text(csv_path, buf.getvalue())
    return csv_path
