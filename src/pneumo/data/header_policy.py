"""The DICOM header policy: which films the model may answer, decided from the header alone.

Why from the header, before any pixel is decoded: a CT slice, a lateral view or an adult's film can
look enough like a pediatric frontal film for the chest-X-ray gate to pass it, but its header says
plainly what it is. Every path (``pneumo predict``, the Python API, the web app, the DICOM node)
asks :func:`check_header` through :mod:`pneumo.inference.analyse`, so the same file gets the same
answer everywhere.

Three outcomes per film: **refused** (Modality not a projection radiograph, a lateral view, another
body part — the model never sees it), **flagged** (patient age outside the validated range — the
answer is given, led by "Outside the validated population"), or nothing. A missing or unreadable
attribute is never a reason: many anonymised films carry none of these.

The policy is saved in the bundle (``pneumo.json`` → ``header_policy``) and can be overridden by a
site (``pneumo policy`` / :meth:`HeaderPolicy.with_overrides`); an override is recorded, never silent.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import warnings
from dataclasses import asdict, dataclass, field, replace

from pneumo.errors import ConfigError

# Projection radiography (PS3.3 C.7.3.1.1.1): what a chest film is stored as. "OT" and empty are
# accepted because secondary captures and scanned films carry them.
RADIOGRAPHY = ("CR", "DX", "RG", "DR", "OT", "PX")
LATERAL_VIEWS = ("LL", "RL", "LATERAL", "LAT", "LLD", "RLD", "XTABLE", "LLO", "RLO")
# SNOMED codes of the view (ViewCodeSequence) that mean a lateral projection.
LATERAL_VIEW_CODES = ("R-10232", "R-10236", "399198007", "399173006", "260434000", "399067008")
CHEST_PARTS = ("CHEST", "THORAX", "LUNG", "PORTABLECHEST", "CHESTABDOMEN", "TSPINE", "")
# Keys of the ``header_policy`` block that describe it rather than set it (``pneumo policy`` writes them).
RECORD_KEYS = ("history", "about")
AGE_TOLERANCE_NOTE = (
    "Validated ages 1-5 years (Kermany et al.: children aged one to five). With the 1-year tolerance a film "
    "is inside when 0 <= age < 6 years and flagged 'outside the validated population' from 6 years on: the "
    "source states ages in whole years, so a child of 5 years 11 months is inside '1-5', and infants under "
    "one are anatomically closer to the validated films than a school child is. Age is read from PatientAge, "
    "else StudyDate - PatientBirthDate; a film without either is not flagged by age (the image-based "
    "population check still runs). Ages flag, never refuse. A site changes the range with `pneumo policy "
    "BUNDLE --set age_years=LO,HI` (recorded in header_policy.overridden and .history).")
AGE_UNITS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


@dataclass(frozen=True)
class HeaderFinding:
    """One reason from the header: ``action`` ``refuse`` or ``flag``; ``code`` for programs, ``reason`` for people."""

    action: str
    code: str
    reason: str


@dataclass(frozen=True)
class HeaderPolicy:
    """What a bundle accepts from a DICOM header.

    Args:
        modalities: Modality values answered; anything else is refused (a missing Modality is not).
        refuse_lateral: refuse ViewPosition / view codes that name a lateral projection.
        body_parts: BodyPartExamined values accepted (upper case, spaces removed); others are refused.
        age_years: the validated age range ``(low, high)`` in years; ``None`` checks no age.
        age_tolerance_years: how far outside ``age_years`` a film may be before it is flagged (the
            dataset's "1–5 years" is stated in whole years, so a child of 5 years 11 months is inside).
        overridden: the keys a site changed from the bundle's default, recorded for the card and logs.
    """

    modalities: tuple[str, ...] = RADIOGRAPHY
    refuse_lateral: bool = True
    body_parts: tuple[str, ...] = CHEST_PARTS
    age_years: tuple[float, float] | None = (1.0, 5.0)
    age_tolerance_years: float = 1.0
    overridden: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"], d["body_parts"] = list(self.modalities), list(self.body_parts)
        d["age_years"] = None if self.age_years is None else list(self.age_years)
        d["overridden"] = list(self.overridden)
        return d

    @classmethod
    def from_meta(cls, meta: dict) -> HeaderPolicy:
        """The bundle's ``header_policy`` block (missing → the defaults, which are the shipped model's)."""
        block = meta.get("header_policy")
        if block is None:
            return cls()
        if not isinstance(block, dict):
            raise ConfigError(f"pneumo.json: 'header_policy' must be an object, got {type(block).__name__}")
        return cls().with_overrides({k: v for k, v in block.items() if k not in RECORD_KEYS}, record=False)

    def block(self) -> dict:
        """The ``pneumo.json`` → ``header_policy`` block: :meth:`to_dict` plus why the age tolerance is what it is."""
        return {**self.to_dict(), "about": AGE_TOLERANCE_NOTE}

    def with_overrides(self, changes: dict, record: bool = True) -> HeaderPolicy:
        """A copy with ``changes`` applied (keys as in :meth:`to_dict`); ``record`` lists them as overridden."""
        known = {f for f in self.__dataclass_fields__ if f != "overridden"}
        unknown = sorted(set(changes) - known - {"overridden"})
        if unknown:
            raise ConfigError(f"header policy: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        kw: dict = {}
        for key, value in changes.items():
            if key == "overridden":
                continue
            kw[key] = _coerce(key, value)
        done = tuple(dict.fromkeys([*self.overridden, *(k for k in kw if record)]))
        return replace(self, **kw, overridden=done if record else tuple(changes.get("overridden", ())))


def _coerce(key: str, value):
    try:
        if key in ("modalities", "body_parts"):
            return tuple(str(v).upper().replace(" ", "") for v in value)
        if key == "refuse_lateral":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if key == "age_years":
            if value is None:
                return None
            lo, hi = (float(v) for v in value)
            if not 0 <= lo <= hi:
                raise ValueError
            return (lo, hi)
        if key == "age_tolerance_years":
            v = float(value)
            if v < 0:
                raise ValueError
            return v
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"header policy: bad value for {key!r}: {value!r}")


def read_header(data: bytes):
    """The DICOM data set up to Pixel Data (a pydicom ``Dataset``), or ``None`` when it cannot be parsed
    (the pixel reader then gives the precise error). Never decodes pixels."""
    import pydicom  # lazy: pydicom is imported only when a DICOM arrives

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - any parse failure: no policy answer, the reader explains
            return None


def check_header(ds, policy: HeaderPolicy) -> list[HeaderFinding]:
    """A DICOM header → the policy's findings (refusals first). Missing attributes yield nothing."""
    out: list[HeaderFinding] = []
    modality = _text(ds, "Modality")
    if modality and modality not in policy.modalities:
        out.append(HeaderFinding("refuse", "not_a_radiograph",
                                 f"Modality {modality} is not a projection radiograph; pneumo reads frontal chest "
                                 "X-rays (CR/DX) only"))
    if policy.refuse_lateral and (view := _lateral(ds)):
        out.append(HeaderFinding("refuse", "lateral_view",
                                 f"lateral view ({view}); pneumo reads frontal (PA/AP) chest X-rays only"))
    part = _text(ds, "BodyPartExamined").replace(" ", "")
    if part and part not in policy.body_parts:
        out.append(HeaderFinding("refuse", "other_body_part",
                                 f"BodyPartExamined is {part}, not the chest"))
    if policy.age_years is not None and (age := patient_age_years(ds)) is not None:
        lo, hi = policy.age_years
        tol = policy.age_tolerance_years
        if not lo - tol <= age < hi + tol:
            out.append(HeaderFinding("flag", "age_outside_range",
                                     f"patient age {_age_words(age)} is outside the validated {lo:g}–{hi:g} years"))
    return sorted(out, key=lambda f: f.action != "refuse")


def _text(ds, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a damaged element is the same as a missing one here
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else ""
    return str(value).strip().upper()[:64]


def _lateral(ds) -> str | None:
    view = _text(ds, "ViewPosition")
    if view in LATERAL_VIEWS:
        return f"ViewPosition {view}"
    try:
        for item in ds.get("ViewCodeSequence") or []:
            code = str(item.get("CodeValue", "")).strip()
            meaning = str(item.get("CodeMeaning", "")).strip()
            if code in LATERAL_VIEW_CODES or "lateral" in meaning.lower():
                return f"view code {meaning or code}"
    except Exception:  # noqa: BLE001 - a damaged sequence is no reason
        return None
    return None


def patient_age_years(ds) -> float | None:
    """PatientAge (``nnnD|W|M|Y``), else StudyDate (or AcquisitionDate) − PatientBirthDate; ``None``
    when neither is there or valid. Non-conformant values (``62``, ``2026-01-15``) are read leniently
    when unambiguous: a bare number as years, dashed dates as dates."""
    age = _text(ds, "PatientAge")
    m = re.fullmatch(r"0*(\d{1,3})\s*([DWMY]?)", age)
    if m and int(m.group(1)) > 0:
        return int(m.group(1)) * AGE_UNITS[m.group(2) or "Y"]
    birth = _date(_text(ds, "PatientBirthDate"))
    seen = _date(_text(ds, "StudyDate")) or _date(_text(ds, "AcquisitionDate")) or _date(_text(ds, "ContentDate"))
    if birth and seen and seen >= birth:
        return (seen - birth).days / 365.25
    return None


def _date(text: str) -> dt.date | None:
    digits = text.replace("-", "").replace(".", "").replace("/", "")
    if not re.fullmatch(r"\d{8}", digits):
        return None
    try:
        d = dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None
    return d if d.year >= 1900 else None


def _age_words(age: float) -> str:
    if age < 2:
        return f"{age * 12:.0f} months"
    return f"{age:.0f} years"


__all__ = ["HeaderFinding", "HeaderPolicy", "check_header", "patient_age_years", "read_header"]
