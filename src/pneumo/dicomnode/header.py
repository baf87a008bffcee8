"""The source header the node's results are built from: a sanitised copy, never the raw source.

Why a copy: highdicom copies the Patient and Study modules of whatever dataset it is given and
validates each value; a film with a missing Type 2 attribute (common after anonymisation) or a
non-conformant value (PatientSex ``X``, StudyDate ``2026-01-15``, PatientAge ``62``, a 10,000-character
name) made it raise, and the film got no answer at all. The rule (docs/pacs.md, "Results built from
what the source has"):

- only the attributes listed in :data:`FIELDS` are carried over (patient, study, the source's UIDs);
- each is checked against its VR; a value is **repaired** where the repair is unambiguous
  (``2026-01-15`` → ``20260115``, ``10:15:00`` → ``101500``, ``m`` → ``M``, ``5Y`` → ``005Y``,
  ``yes`` → ``YES``), **truncated** to the VR's length (PN 64 per component group, LO 64, SH 16), and
  otherwise **dropped**: an empty value for a Type 2 attribute, absent for a Type 3 one;
- a missing Type 2 attribute becomes an empty value, never a failure.

Only the UIDs the result must reference (SOP Class/Instance, Study, Series) are required; the
C-STORE refuses an instance without them (:func:`missing_uids`) before accepting it.
"""

from __future__ import annotations

import datetime as dt
import re

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
# (keyword, VR, type): type 2 → always present (empty when missing or invalid); 3 → only when valid.
FIELDS = (
    ("PatientName", "PN", 2), ("PatientID", "LO", 2), ("IssuerOfPatientID", "LO", 3),
    ("PatientBirthDate", "DA", 2), ("PatientSex", "CS", 2), ("PatientAge", "AS", 3),
    ("PatientIdentityRemoved", "CS", 3), ("DeidentificationMethod", "LO", 3),
    ("StudyDate", "DA", 2), ("StudyTime", "TM", 2), ("StudyID", "SH", 2), ("AccessionNumber", "SH", 2),
    ("ReferringPhysicianName", "PN", 2), ("StudyDescription", "LO", 3),
    ("InstanceNumber", "IS", 3), ("PatientOrientation", "CS", 3), ("BodyPartExamined", "CS", 3),
    # the acquisition equipment, which the SC lists in its Contributing Equipment Sequence
    ("Manufacturer", "LO", 3), ("ManufacturerModelName", "LO", 3), ("DeviceSerialNumber", "LO", 3),
    ("SoftwareVersions", "LO", 3), ("InstitutionName", "LO", 3), ("InstitutionalDepartmentName", "LO", 3),
)
ENUMS = {"PatientSex": ("M", "F", "O"), "PatientIdentityRemoved": ("YES", "NO")}
LENGTH = {"LO": 64, "SH": 16, "CS": 16, "PN": 64}
CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def missing_uids(ds: Dataset) -> list[str]:
    """The required UIDs that are absent or not valid UIDs (an instance without them cannot be answered)."""
    out = []
    for kw in REQUIRED_UIDS:
        try:
            value = str(ds.get(kw, "") or "").strip()
        except Exception:  # noqa: BLE001 - an undecodable element counts as missing
            value = ""
        if not (value and len(value) <= 64 and UID_RE.match(value)):
            out.append(kw)
    return out


def _date(text: str) -> str:
    digits = re.sub(r"[-./]", "", text) if re.fullmatch(r"\d{4}[-./]?\d{2}[-./]?\d{2}", text) else ""
    try:
        dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return ""
    return digits


def _time(text: str) -> str:
    m = re.fullmatch(r"(\d{2}):?(\d{2})?:?(\d{2})?(\.\d{1,6})?", text)
    if not m or int(m.group(1)) > 23 or int(m.group(2) or 0) > 59 or int(m.group(3) or 0) > 60:
        return ""
    return "".join(g for g in m.groups() if g)


def _age(text: str) -> str:
    m = re.fullmatch(r"(\d{1,3})\s*([DWMY])", text.upper())
    return f"{int(m.group(1)):03d}{m.group(2)}" if m else ""  # a bare number ("62") has no unit: dropped


def _person(text: str) -> str:
    groups = [CONTROL.sub("", g)[:LENGTH["PN"]].rstrip("^ ") for g in text.split("=")[:3]]
    return "=".join(groups).rstrip("=")


def clean(keyword: str, vr: str, raw) -> str | int:
    """One value checked against its VR: the repaired value, or ``""`` when it cannot be kept."""
    if raw is None:
        return ""
    if isinstance(raw, MultiValue) and keyword != "PatientOrientation":  # VM 1 kept: the first value
        raw = raw[0] if len(raw) else ""
    if vr == "IS":
        try:
            n = int(str(raw).strip())
        except ValueError:
            return ""
        return n if 0 <= n < 2**31 else ""
    text = str(raw).strip()
    if vr == "PN":
        return _person(text)
    if vr == "DA":
        return _date(text)
    if vr == "TM":
        return _time(text)
    if vr == "AS":
        return _age(text)
    if keyword == "PatientOrientation":  # CS, VM 2: "L\F"
        parts = [p.strip().upper() for p in (raw if not isinstance(raw, str) else text.split("\\"))]
        ok = len(parts) == 2 and all(re.fullmatch(r"[APRLHFP]{1,3}", p) for p in parts)
        return "\\".join(parts) if ok else ""
    text = CONTROL.sub("", text)
    if vr == "CS":
        text = text.upper()
        if keyword in ENUMS:
            return text if text in ENUMS[keyword] else ""
        return text[:LENGTH["CS"]] if re.fullmatch(r"[A-Z0-9 _]*", text) else ""
    return text[: LENGTH.get(vr, 64)].rstrip()


def sanitised(source: Dataset) -> Dataset:
    """A new dataset with only :data:`FIELDS` and the required UIDs of ``source``, each valid for its VR.

    Raises ``ValueError`` when a required UID is missing (the C-STORE should have refused it).
    """
    missing = missing_uids(source)
    if missing:
        raise ValueError(f"source lacks {', '.join(missing)}")
    out = Dataset()
    for kw in REQUIRED_UIDS:
        setattr(out, kw, str(source.get(kw)).strip())
    for kw, vr, typ in FIELDS:
        try:
            value = clean(kw, vr, source.get(kw))
        except Exception:  # noqa: BLE001 - an undecodable value is a missing value
            value = ""
        if value != "" or typ == 2:
            if kw == "PatientOrientation" and value:
                setattr(out, kw, str(value).split("\\"))
            else:
                setattr(out, kw, value)
    if "DeidentificationMethod" not in out:  # "identity removed: YES" requires the method (Type 1C)
        out.pop("PatientIdentityRemoved", None)
    # Values are re-encoded from text, and pneumo's own text has non-ASCII characters ("—"): UTF-8 holds all.
    out.SpecificCharacterSet = "ISO_IR 192"
    return out


__all__ = ["FIELDS", "REQUIRED_UIDS", "clean", "missing_uids", "sanitised"]
