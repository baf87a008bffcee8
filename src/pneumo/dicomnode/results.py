"""The DICOM objects pneumo sends back into the study: a Structured Report and a Secondary Capture.

Why a Comprehensive SR and not TID 1500: TID 1500 (Measurement Report) is built for measurements
of tracked regions (measurement groups, tracking identifiers, finding sites); pneumo's answer is one
image-level classification plus its provenance (model, weights, operating point, the gate) and a
free-text caveat, which TID 1500 has no place for without contortions. A Comprehensive SR holds
exactly that content tree and is stored and shown by every PACS that stores SR. Codes: DCM for the
algorithm identification (TID 4019's Algorithm Name/Version) and the comment, SCT for the source
image and the findings, and the private scheme ``99PNEUMO`` (PS3.16 8.2: local codes start with 99)
for pneumo's own quantities.

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

from pneumo.inference import NOT_A_CXR, Prediction
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


TITLE = code("18748-4", "Diagnostic imaging report", "LN")
PROBABILITY = code("P-PNEU", "Probability of pneumonia")
DECISION = code("DECISION", "Decision at the operating point")
THRESHOLD = code("THRESHOLD", "Operating point (probability threshold)")
VAL_SENS = code("VAL-SENS", "Validation sensitivity at the operating point")
VAL_SPEC = code("VAL-SPEC", "Validation specificity at the operating point")
GATE = code("GATE", "Chest X-ray gate")
OOD_SCORE = code("OOD-SCORE", "Out-of-distribution score")
REFUSAL = code("REFUSAL", "Reason no result is given")
POPULATION = code("POPULATION", "Population check")
WEIGHTS = code("WEIGHTS-SHA256", "Model weights SHA-256")
UNIT = code("1", "no units", "UCUM")
DECISIONS = {
    "PNEUMONIA": code("233604007", "Pneumonia", "SCT"),
    "NORMAL": code("17621005", "Normal", "SCT"),
    NOT_A_CXR: code(NOT_A_CXR, "Not a chest X-ray"),
    "NO_RESULT": code("NO_RESULT", "No result"),
}
GATE_PASSED = code("CHEST_XRAY", "Frontal chest X-ray")
GATE_NONE = code("NO_GATE", "Not checked: the model has no chest X-ray gate")


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


def build_sr(source: Dataset, model: ModelInfo, pred: Prediction | None, refusal: str | None,
             flagged: str | None = None) -> Dataset:
    """The report for one source instance; ``refusal`` (a sentence) when no probability is given;
    ``flagged`` ("Outside the validated population — <reason>") for an answer outside what the model
    was validated on.

    ``source`` needs its header only (patient, study and SOP attributes are copied from it).
    """
    items = [
        _text(codes.DCM.AlgorithmName, model.name),
        _text(codes.DCM.AlgorithmVersion, f"{model.version} (pneumo {__version__})"),
        _text(WEIGHTS, model.weights_sha256),
        hd.sr.ImageContentItem(
            name=codes.SCT.Source,
            referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
            relationship_type="CONTAINS",
        ),
    ]
    if pred is not None:
        gate = DECISIONS[NOT_A_CXR] if pred.ood else (GATE_PASSED if model.has_gate else GATE_NONE)
        items.append(_code(GATE, gate))
        if pred.ood_score is not None:
            items.append(_num(OOD_SCORE, pred.ood_score))
    if refusal is None and pred is not None:
        if flagged:
            items.append(_text(POPULATION, flagged))
        items += [
            _num(PROBABILITY, pred.probability),
            _code(DECISION, DECISIONS[pred.decision]),
            _num(THRESHOLD, pred.threshold),
            _text(code("RULE", "Operating point rule"), model.rule),
        ]
        if model.val_sensitivity is not None:
            items.append(_num(VAL_SENS, model.val_sensitivity))
        if model.val_specificity is not None:
            items.append(_num(VAL_SPEC, model.val_specificity))
    else:
        decided = NOT_A_CXR if pred is not None and pred.ood else "NO_RESULT"
        items += [_code(DECISION, DECISIONS[decided]), _text(REFUSAL, refusal or "no result")]
    items.append(_text(codes.DCM.Comment, DISCLAIMER))
    root = hd.sr.ContainerContentItem(name=TITLE)
    root.ContentSequence = hd.sr.ContentSequence(items, is_root=False)
    return hd.sr.ComprehensiveSR(
        evidence=[source],
        content=root,
        series_instance_uid=series_uid(source, model, "sr"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=result_uid(source, model, "sr"),
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="pneumo AI result (decision support, not a diagnosis)",
    )


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
    """The heatmap picture as a Secondary Capture in pneumo's own series of the source's study."""
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
    if value is not None and len(value) == 2 and all(str(v) for v in value):
        return str(value[0]), str(value[1])
    return ("L", "F")  # a frontal chest film as displayed: rows run to the patient's left, columns to the feet
