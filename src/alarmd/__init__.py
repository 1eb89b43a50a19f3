"""alarmd: an alarm daemon for enterprise leased lines."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("alarmd")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
