"""Server settings: the limits that keep one bad or greedy client from hurting everyone else."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pneumo.data.imageio import DEFAULT_MAX_PIXELS
from pneumo.errors import ConfigError

ENV_CONFIG = "PNEUMO_SERVER_CONFIG"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ServerSettings:
    """Limits and paths for one server process.

    Args:
        audit_db: SQLite file of the audit log (created if missing).
        max_upload_mb: largest accepted upload; larger bodies get 413 while still streaming.
        max_pixels: largest accepted image (width × height), a guard against decompression bombs.
        queue: most requests in flight or waiting per worker process; beyond it, 503 + Retry-After.
        threads: inference threads per worker process.
        display_max_side: the display PNG returned to the page is at most this many pixels a side.
        min_side: smaller images are refused (they cannot be a chest radiograph).
        backend: ``auto``, ``torch`` or ``onnx`` (see :class:`pneumo.inference.Predictor`).
        onnx_file: which ONNX model of the bundle runs (``model.int8.onnx``); ``None``: ``model.onnx``.
        body_timeout_s: an upload that sends nothing for this long is answered 408, so a stalled
            client holds a connection, never the server.
        body_deadline_s: the most time a whole upload may take (a trickle of bytes is still stalled).
        allowed_hosts: ``Host`` header values accepted (DNS-rebinding guard); ``*`` accepts any.
    """

    audit_db: str = "pneumo-audit.sqlite"
    max_upload_mb: float = 25.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue: int = 16
    threads: int = 2
    display_max_side: int = 1024
    min_side: int = 32
    backend: str = "auto"
    retry_after_s: int = 2
    onnx_file: str | None = None
    body_timeout_s: float = 15.0
    body_deadline_s: float = 120.0
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0:
            raise ConfigError(f"--max-upload-mb must be positive, got {self.max_upload_mb}")
        if self.max_pixels < 1:
            raise ConfigError(f"--max-pixels must be positive, got {self.max_pixels}")
        if self.queue < 1:
            raise ConfigError(f"--queue must be at least 1, got {self.queue}")
        if self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if self.backend not in ("auto", "torch", "onnx"):
            raise ConfigError(f"backend must be auto, torch or onnx, got {self.backend!r}")
        if not 0 < self.body_timeout_s <= self.body_deadline_s:
            raise ConfigError(f"--body-timeout must be positive and at most the deadline, got {self.body_timeout_s}")
        object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))  # JSON gives a list
        if not self.allowed_hosts:
            raise ConfigError("allowed_hosts is empty: no request could be answered")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def to_env(self, bundle: str | Path) -> str:
        """Serialise for uvicorn worker processes (they rebuild the app from the environment)."""
        return json.dumps({"bundle": str(bundle), "settings": asdict(self)})

    @classmethod
    def from_env(cls) -> tuple[str, ServerSettings]:
        raw = os.environ.get(ENV_CONFIG)
        if not raw:
            raise ConfigError(f"${ENV_CONFIG} is not set; start the server with `pneumo serve`")
        obj = json.loads(raw)
        known = {f.name for f in fields(cls)}
        return obj["bundle"], cls(**{k: v for k, v in obj["settings"].items() if k in known})
