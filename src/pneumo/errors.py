"""The one exception type a user can cause.

The CLI prints a :class:`PneumoError` as a single line and exits non-zero; the server maps it to a
4xx JSON body. Anything else escaping is a bug in pneumo, not in the user's input.
"""

from __future__ import annotations


class PneumoError(Exception):
    """A problem with the user's input: a file, a dataset, a bundle, a config value.

    ``code`` is a short machine-readable slug (used by the HTTP API and the audit log);
    ``status`` is the HTTP status the server answers with.
    """

    code = "invalid_input"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class ImageError(PneumoError):
    """An image that cannot be read, is empty, truncated, too large, or not supported."""

    code = "bad_image"
    status = 422


class DatasetError(PneumoError):
    """A dataset root or manifest that is missing or malformed."""

    code = "bad_dataset"


class BundleError(PneumoError):
    """A model bundle directory that is missing, incomplete, or of an unknown version."""

    code = "bad_bundle"


class ConfigError(PneumoError):
    """A configuration value that is missing or outside what is allowed."""

    code = "bad_config"


class TooFewImages(DatasetError):
    """A dataset too small for one step (e.g. fitting the chest-X-ray gate) that others can still run on."""

    code = "too_few_images"
