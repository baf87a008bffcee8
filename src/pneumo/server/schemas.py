"""Pydantic models for every JSON body the API sends: they are the OpenAPI contract at ``/openapi.json``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Label = Literal["PNEUMONIA", "NORMAL", "not_a_chest_xray", "refused"]
Status = Literal["decided", "flagged", "refused"]
ImageFormat = Literal["JPEG", "PNG", "DICOM"]
NOTICE = "Decision support, not a diagnosis. A clinician must review every image."


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable slug, e.g. 'not_an_image', 'upload_too_large'.")
    message: str = Field(description="What went wrong and what to send instead, for a person.")


class ErrorResponse(BaseModel):
    error: ErrorDetail
    request_id: str


class ModelRef(BaseModel):
    name: str
    version: str
    sha256: str = Field(description="SHA-256 of the model weights (model.safetensors).")


class OodResult(BaseModel):
    available: bool = Field(description="False when the bundle has no out-of-distribution detector.")
    flag: bool | None = Field(None, description="True: the image does not look like a frontal chest X-ray (refused).")
    score: float | None = None
    threshold: float | None = None


class PopulationResult(BaseModel):
    available: bool = Field(description="False when the bundle has no population model (or the image was refused).")
    value: Literal["typical", "atypical", "far"] | None = Field(
        None, description="'atypical': a chest X-ray unlike the films the model was validated on; the answer "
                          "is given, led by 'Outside the validated population'. 'far': too far outside to "
                          "answer (the film is refused).")
    score: float | None = Field(None, description="The population score: with a population model 1.0 at the flag "
                                "limit (`threshold`); else the Mahalanobis score (1 ≈ a typical film).")
    threshold: float | None = None


class ImageInfo(BaseModel):
    width: int
    height: int
    format: ImageFormat
    sha256: str = Field(description="SHA-256 of the uploaded bytes (the audit log's key).")
    display_png: str | None = Field(
        None, description="Base64 PNG of the image as the model read it, downscaled (only with ?display=true)."
    )
    display_width: int | None = None
    display_height: int | None = None


class Heatmap(BaseModel):
    method: str
    target: str = Field(description="Whose evidence the map shows: 'pneumonia' (decision PNEUMONIA) or 'normal' "
                        "(decision NORMAL: evidence against pneumonia).")
    shows: str = Field(description="One sentence saying what the map shows, for the legend.")
    png: str = Field(description="Base64 RGBA PNG at the display size, to lay over the image.")


class OperatingPoint(BaseModel):
    rule: str | None = None
    logit: float
    threshold: float = Field(description="Probability threshold (after calibration).")
    val_sensitivity: float | None = None
    val_specificity: float | None = None


class Flag(BaseModel):
    code: str = Field(description="Machine-readable reason, e.g. 'atypical_population', 'age_outside_range', "
                                  "'lateral_view', 'not_a_radiograph', 'not_a_chest_xray'.")
    reason: str = Field(description="The reason in words, for a person.")


class PredictResponse(BaseModel):
    request_id: str
    status: Status = Field(description="'decided': an answer inside what the model was validated on; 'flagged': an "
                           "answer for a film outside the validated population (lead with `headline`); 'refused': "
                           "no answer (not a frontal chest X-ray, or ruled out by its DICOM header).")
    headline: str | None = Field(None, description="For a flagged or refused film, what to show first: "
                                 "'Outside the validated population — <reason>' or 'Not a chest X-ray — <reason>'.")
    flags: list[Flag] = Field(default_factory=list, description="Every reason the film was refused or flagged.")
    label: Label = Field(description="PNEUMONIA/NORMAL for an accepted film; 'not_a_chest_xray' when the gate "
                         "refused it; 'refused' when its DICOM header ruled it out.")
    probability: float | None = Field(description="Calibrated probability of pneumonia; null when refused.")
    threshold: float = Field(description="Probability at the model's operating point; label = probability ≥ it.")
    operating_point: OperatingPoint
    ood: OodResult
    population: PopulationResult
    model: ModelRef
    image: ImageInfo
    heatmap: Heatmap | None = None
    warnings: list[str] = Field(default_factory=list)
    message: str | None = Field(None, description="Why the image was refused, when it was.")
    notice: str = NOTICE
    latency_ms: float


class HealthResponse(BaseModel):
    status: Literal["ok", "starting", "degraded"]
    model: ModelRef | None
    uptime_s: float
    in_flight: int
    queue_limit: int
    problems: list[str] = Field(default_factory=list,
                                description="Why predictions cannot be served now (status degraded, HTTP 503).")


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str
    created: str | None = None
    architecture: dict
    backend: str
    class_names: list[str]
    operating_point: OperatingPoint
    preprocess: dict
    temperature: float
    calibration: dict | None = None
    ood: dict | None = None
    gate: dict | None = None
    population: dict | None = Field(None, description="The population check: method, thresholds, what it was "
                                    "fitted on and its measured rates ('is this film like the validated ones?').")
    header_policy: dict = Field(description="The DICOM header policy every surface applies before decoding: refused "
                                "modalities, lateral views and body parts; the validated age range; site overrides.")
    validation_metrics: dict | None = None
    notice: str = NOTICE
    limits: dict
