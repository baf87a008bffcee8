"""``pneumo.json``, typed: the schema a bundle's metadata is checked against when it is loaded.

``load_bundle`` calls :func:`check_meta`, so a hand-edited or damaged ``pneumo.json`` fails at load in
one line that names the bad key and what was expected (``pneumo.json: operating_point.logit: expected
a finite number, got 'high'``) instead of a ``KeyError``/``TypeError`` deep in predict, evaluate or
the server. :class:`BundleMeta` is the versioned model (``format_version`` 1) of the keys pneumo reads;
blocks it does not list (training history, shift suite, score reference ...) are kept as they are, and
every block allows keys it does not name, so an older or newer pneumo's extra fields never refuse a
bundle.

Checked strictly (JSON types, no coercion): a string where a number belongs is an error, not a guess.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pneumo.errors import BundleError

FORMAT_VERSION = 1


class _Block(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("expected a finite number")
    return v


class Architecture(_Block):
    name: str = Field(min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class Preprocess(_Block):
    size: int = Field(ge=8, le=8192)
    resize: Literal["stretch", "letterbox", "center_crop"] = "stretch"
    normalise: Literal["unit", "zscore"] = "zscore"
    mean: float = 0.5
    std: float = Field(default=0.25, gt=0)
    equalise: bool = False


class OperatingPoint(_Block):
    """A threshold on the logit: PNEUMONIA iff ``logit >= logit`` (see :mod:`pneumo.decision`)."""

    logit: float
    rule: str | None = None

    _logit = field_validator("logit")(_finite)


class Calibration(_Block):
    weights_sha256: str | None = None


class Derived(_Block):
    sha256: str
    weights_sha256: str | None = None


class ThresholdBlock(_Block):
    """The gate's and the population check's blocks: a fitted one needs the threshold it is compared with."""

    fitted: bool = False
    threshold: float | None = None

    @model_validator(mode="after")
    def _fitted_has_threshold(self) -> ThresholdBlock:
        if self.fitted and self.threshold is None:
            raise ValueError("a fitted block needs a numeric 'threshold'")
        return self


class BundleMeta(_Block):
    """The keys of ``pneumo.json`` that pneumo reads (format 1)."""

    format_version: Literal[1]
    name: str = ""
    architecture: Architecture
    preprocess: Preprocess
    operating_point: OperatingPoint
    class_names: list[str] = Field(default_factory=lambda: ["NORMAL", "PNEUMONIA"], min_length=2, max_length=2)
    thresholds: dict[str, OperatingPoint] = Field(default_factory=dict)
    temperature: float = Field(default=1.0, gt=0)
    calibration_bias: float = 0.0
    calibration: Calibration | None = None
    weights_sha256: str | None = None
    derived: dict[str, Derived] = Field(default_factory=dict)
    gate: ThresholdBlock | None = None
    ood: ThresholdBlock | None = None
    onnx: dict[str, Any] | None = None
    header_policy: dict[str, Any] | None = None
    training_data: dict[str, Any] = Field(default_factory=dict)
    validation_metrics: dict[str, Any] = Field(default_factory=dict)

    _finite_numbers = field_validator("temperature", "calibration_bias")(_finite)


def check_meta(meta: Any, where: str | Path = "pneumo.json") -> BundleMeta:
    """``meta`` (parsed ``pneumo.json``) → :class:`BundleMeta`, or a one-line :class:`BundleError` naming
    the first bad key, what was expected and what was found."""
    try:
        return BundleMeta.model_validate(meta)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = "".join(f"[{p!r}]" if "." in str(p) else f".{p}" for p in err["loc"]).lstrip(".") or "(top level)"
        whole_block = err["type"] == "missing" or isinstance(err.get("input"), dict)
        got = "" if whole_block else f", got {_short(err.get('input'))}"
        msg = err["msg"].replace("Input should be", "expected").replace("Value error, ", "")
        msg = "missing" if err["type"] == "missing" else msg
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise BundleError(f"{where}: {key}: {msg}{got}{more}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["FORMAT_VERSION", "BundleMeta", "check_meta"]
