"""The DICOM objects pneumo sends back into the study: a Structured Report and a Secondary Capture.

Why a Comprehensive SR and not TID 1500: TID 1500 (Measurement Report) is built for measurements
of tracked regions (measurement groups, tracking identifiers, finding sites); pneumo's answer is one
image-level classification plus its provenance (model, weights, operating point, the gate) and a
free-text caveat, which TID 1500 has no place for without contortions. A Comprehensive SR holds
exactly that content tree and is stored and shown by every PACS that stores SR. Codes: standard
ones (DCM, SCT, LOINC, UCUM) wherever a concept has one — the decision is DCM "Finding" = SCT
Pneumonia/Normal, the threshold a DCM "CAD Operating Point" — and the private scheme ``99PNEUMO``
(PS3.16 8.2: local codes start with 99; declared in CodingSchemeIdentificationSequence) only for the
gate, the population check, the header policy and the refusal, which have none (docs/pacs.md).

Why UIDs derived from the source instance: a result rebuilt after a crash gets the same UIDs, so a
PACS sees a resend as the same object, never as a second report.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pneumo.dicomnode.header import sanitised
from pneumo.inference import Prediction
from pneumo.version import __version__

SCHEME = "99PNEUMO"
DISCLAIMER = (
    "Decision support, not a diagnosis. pneumo was trained on pediatric (ages 1-5) frontal chest X-rays "
    "from one hospital; it is not validated for adults, lateral views, other diseases or other hospitals."
)
MANUFACTURER = "pneumo"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902


def code(value: str, meaning: str, scheme: str = SCHEME) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value, scheme, meaning)


# Standard codes wherever a concept has one (docs/pacs.md lists them, and why each private one is private).
TITLE = code("18748-4", "Diagnostic imaging report", "LN")
FINDING = code("121071", "Finding", "DCM")  # the decision's concept name: what a RIS maps
PROBABILITY = code("122157", "Probability", "DCM")  # of the finding pneumonia (SCT 233604007)
THRESHOLD = code("111071", "CAD Operating Point", "DCM")
RULE = code("111081", "CAD Operating Point Description", "DCM")
VAL_SENS = code("111088", "Case Sensitivity", "DCM")
VAL_SPEC = code("111090", "Case Specificity", "DCM")
PARAMETERS = code("111002", "Algorithm Parameters", "DCM")  # carries the weights' SHA-256
COMMENT = code("121106", "Comment", "DCM")
UNIT = code("1", "no units", "UCUM")
DECISIONS = {
    "PNEUMONIA": code("233604007", "Pneumonia", "SCT"),
    "NORMAL": code("17621005", "Normal", "SCT"),
}
# Private (99PNEUMO): no standard concept exists for these (reasons in docs/pacs.md).
GATE = code("GATE", "Chest X-ray gate")
OOD_SCORE = code("OOD-SCORE", "Chest X-ray gate score")
POPULATION = code("POPULATION", "Population check")
HEADER = code("HEADER-POLICY", "Header policy check")
REFUSAL = code("REFUSAL", "Reason no result is given")
NOT_A_CXR_CODE = code("NOT-A-CXR", "Not a chest X-ray")
GATE_PASSED = code("CHEST-XRAY", "Frontal chest X-ray")
GATE_NONE = code("NO-GATE", "Not checked: the model has no chest X-ray gate")
POPULATIONS = {
    "typical": code("TYPICAL", "Like the validation films"),
    "atypical": code("ATYPICAL", "Unlike the validation films"),
    "far": code("FAR-OUTSIDE", "Too far outside the validation films to answer"),
    None: code("NOT-CHECKED", "Not checked"),
}
HEADER_FINDINGS = {  # pneumo.data.header_policy's codes
    "not_a_radiograph": code("NOT-RADIOGRAPH", "Refused: not a projection radiograph"),
    "lateral_view": code("LATERAL-VIEW", "Refused: lateral view"),
    "other_body_part": code("OTHER-BODY-PART", "Refused: body part is not the chest"),
    "age_outside_range": code("AGE-RANGE", "Flagged: age outside the validated range"),
}
HEADER_PASSED = code("HDR-PASSED", "Nothing in the header refuses or flags the film")
REFUSALS = {  # the refusal's own code (a film refused before or by the model)
    "not_a_chest_xray": NOT_A_CXR_CODE,
    "far_outside_population": POPULATIONS["far"],
    **{k: v for k, v in HEADER_FINDINGS.items() if k != "age_outside_range"},
}
NO_RESULT = code("NO-RESULT", "No result")


@dataclass(frozen=True)
class ModelInfo:
    """What the report says about the model (from the bundle)."""

    name: str
    version: str
    weights_sha256: str
    rule: str
    val_sensitivity: float | None
    val_specificity: float | None
    has_gate: bool

    @classmethod
    def of(cls, bundle, has_gate: bool) -> ModelInfo:
        op = bundle.meta.get("operating_point", {})
        sens, spec = op.get("val_sensitivity"), op.get("val_specificity")
        return cls(bundle.name, bundle.version, bundle.sha256, str(op.get("rule", "unknown")),
                   None if sens is None else float(sens), None if spec is None else float(spec), has_gate)


def result_uid(source: Dataset, model: ModelInfo, kind: str) -> str:
    return generate_uid(entropy_srcs=[str(source.SOPInstanceUID), model.weights_sha256, kind])


def series_uid(source: Dataset, model: ModelInfo, kind: str) -> str:
    """One pneumo SR series and one SC series per study and model, whatever the number of films."""
    return generate_uid(entropy_srcs=[str(source.StudyInstanceUID), model.weights_sha256, kind, "series"])


def _text(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type="CONTAINS")


def _num(name: hd.sr.CodedConcept, value: float) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(name=name, value=float(value), unit=UNIT, relationship_type="CONTAINS")


def _code(name: hd.sr.CodedConcept, value: hd.sr.CodedConcept) -> hd.sr.CodeContentItem:
    return hd.sr.CodeContentItem(name=name, value=value, relationship_type="CONTAINS")


def header_answer(flags, refusal_code: str | None = None) -> hd.sr.CodedConcept:
    """The header policy's answer as a code: its first finding, or "passed"."""
    codes_seen = [c for c, _ in flags] + ([refusal_code] if refusal_code else [])
    return next((HEADER_FINDINGS[c] for c in codes_seen if c in HEADER_FINDINGS), HEADER_PASSED)


def checks_line(pred: Prediction | None, flags) -> str:
    """One burned-in line: the population check's and the header policy's answers."""
    pop = POPULATIONS.get(pred.population if pred is not None else None, POPULATIONS[None]).meaning
    return f"Population check: {pop.lower()}; header policy: {header_answer(flags).meaning.lower()}"


def build_sr(source: Dataset, model: ModelInfo, pred: Prediction | None, refusal: str | None,
             flagged: str | None = None, *, flags=(), refusal_code: str | None = None) -> Dataset:
    """The report for one source instance; ``refusal`` (a sentence) when no probability is given;
    ``flagged`` ("Outside the validated population — <reason>") for an answer outside what the model
    was validated on; ``flags`` the analysis's ``(code, reason)`` list; ``refusal_code`` its code.

    ``source`` needs its header only; the patient and study attributes come from its sanitised copy
    (:func:`pneumo.dicomnode.header.sanitised`), never from the raw source.
    """
    src = sanitised(source)
    items = [
        _text(codes.DCM.AlgorithmName, model.name),
        _text(codes.DCM.AlgorithmVersion, f"{model.version} (pneumo {__version__})"),
        _text(PARAMETERS, f"weights SHA-256 {model.weights_sha256}"),
        hd.sr.ImageContentItem(
            name=codes.SCT.Source,
            referenced_sop_class_uid=src.SOPClassUID,
            referenced_sop_instance_uid=src.SOPInstanceUID,
            relationship_type="CONTAINS",
        ),
        _code(HEADER, header_answer(flags, refusal_code)),
    ]
    if pred is not None:
        gate = NOT_A_CXR_CODE if pred.ood else (GATE_PASSED if model.has_gate else GATE_NONE)
        items.append(_code(GATE, gate))
        if pred.ood_score is not None:
            items.append(_num(OOD_SCORE, pred.ood_score))
    items.append(_code(POPULATION, POPULATIONS.get(pred.population if pred is not None else None,
                                                   POPULATIONS[None])))
    if refusal is None and pred is not None:
        items += [
            _num(PROBABILITY, pred.probability),
            _code(FINDING, DECISIONS[pred.decision]),
            _num(THRESHOLD, pred.threshold),
            _text(RULE, model.rule),
        ]
        if model.val_sensitivity is not None:
            items.append(_num(VAL_SENS, model.val_sensitivity))
        if model.val_specificity is not None:
            items.append(_num(VAL_SPEC, model.val_specificity))
        if flagged:
            items.append(_text(COMMENT, flagged))
    else:
        why = refusal_code or ("not_a_chest_xray" if pred is not None and pred.ood else None)
        items += [_code(REFUSAL, REFUSALS.get(why or "", NO_RESULT)), _text(COMMENT, refusal or "no result")]
    items.append(_text(COMMENT, DISCLAIMER))
    root = hd.sr.ContainerContentItem(name=TITLE)
    root.ContentSequence = hd.sr.ContentSequence(items, is_root=False)
    sr = hd.sr.ComprehensiveSR(
        evidence=[src],
        content=root,
        series_instance_uid=series_uid(src, model, "sr"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=result_uid(src, model, "sr"),
        instance_number=int(src.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="pneumo AI result (decision support, not a diagnosis)",
    )
    sr.CodingSchemeIdentificationSequence = [_private_scheme()]
    return sr


def _private_scheme() -> Dataset:
    """Declares ``99PNEUMO`` (PS3.3 C.12.1.1.4): a private scheme must say whose it is."""
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = "pneumo local codes"
    item.CodingSchemeResponsibleOrganization = "pneumo project"
    return item


def caption(model: ModelInfo, pred: Prediction, shows: str) -> list[str]:
    """The burned-in lines of the Secondary Capture (first line shown in yellow)."""
    sens = "" if model.val_sensitivity is None else f", val. sens. {model.val_sensitivity:.3f}"
    spec = "" if model.val_specificity is None else f" / spec. {model.val_specificity:.3f}"
    return [
        "NOT FOR DIAGNOSIS - decision support only",
        f"P(pneumonia) = {pred.probability:.3f}   decision: {pred.decision}",
        f"threshold {pred.threshold:.3f} ({model.rule}{sens}{spec})",
        f"model {model.name} {model.version} (pneumo {__version__}), weights {model.weights_sha256[:12]}",
        f"Heatmap: {shows}",
    ]


def build_sc(source: Dataset, model: ModelInfo, rgb: np.ndarray) -> Dataset:
    """The heatmap picture as a Secondary Capture in pneumo's own series of the source's study
    (patient and study attributes from the sanitised copy of ``source``)."""
    source = sanitised(source)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid(source, model, "sc"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=result_uid(source, model, "sc"),
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER,
        patient_orientation=_orientation(source),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    sc.SeriesDescription = "pneumo heatmap (not for diagnosis)"
    sc.Laterality = ""  # General Series, Type 2C: a chest film is not of one side; empty, never absent
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = "pneumo heatmap overlay: decision support, not a diagnosis"
    sc.DerivationDescription = "Model attention heatmap blended over the source film"
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    return sc


def _orientation(source: Dataset) -> tuple[str, str]:
    value = source.get("PatientOrientation")
    if value is not None and not isinstance(value, str) and len(value) == 2 and all(str(v) for v in value):
        return str(value[0]), str(value[1])
    return ("L", "F")  # a frontal chest film as displayed: rows run to the patient's left, columns to the feet
