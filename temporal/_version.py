"""The installed version of temporal (0.0.0 when running from a bare source tree)."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("temporal")
except PackageNotFoundError:
    VERSION = "0.0.0"
