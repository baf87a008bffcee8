"""The one version source: the installed package's metadata (``pyproject.toml``'s ``version``).

A module of its own so that pneumo's modules import the version without importing the package root,
whose lazy public API (``pneumo.load`` ...) would otherwise close an import cycle through them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pneumo")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
