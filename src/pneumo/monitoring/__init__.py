"""Watching a deployed model: its live scores against the validation scores stored in its bundle.

A model's behaviour can drift without any error being raised — a new scanner, another hospital's
post-processing, a different patient mix. The audit log already holds every answer, so monitoring is
a read of it compared with the reference distribution written into ``pneumo.json`` when the bundle
was made (:mod:`pneumo.monitoring.reference`)."""

from pneumo.monitoring.drift import Bounds, summarise
from pneumo.monitoring.reference import add_score_reference, score_reference

__all__ = ["Bounds", "add_score_reference", "score_reference", "summarise"]
