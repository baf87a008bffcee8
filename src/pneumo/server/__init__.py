"""The web app and REST API: ``create_app(bundle_path, settings)``; run it with ``pneumo serve``."""

from pneumo.server.app import create_app
from pneumo.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
