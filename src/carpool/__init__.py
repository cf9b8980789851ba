"""carpool: a highly available load-balancer pair."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("carpool")
except _metadata.PackageNotFoundError:  # run from a source tree without an install
    __version__ = "0+unknown"
