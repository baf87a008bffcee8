"""The web app and REST API: ``create_app(bundle_path, settings)``; run it with ``pneumo serve``.

``create_app`` and ``ServerSettings`` are imported on first use (module ``__getattr__``): the DICOM
node imports ``pneumo.server.audit_store``, and importing a submodule runs this file first — it must
not pull in FastAPI, the routes and the PDF report for a process that serves no HTTP.
"""

from __future__ import annotations

_LAZY = {"create_app": "pneumo.server.app", "ServerSettings": "pneumo.server.settings"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pneumo.server' has no attribute {name!r}")


__all__ = ["ServerSettings", "create_app"]
