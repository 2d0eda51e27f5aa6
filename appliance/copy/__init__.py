"""Copying between NBD exports and local files (``appliance nbd copy``).

``open_source`` / ``open_destination`` open the ends, ``run_copy`` moves the data with
several connections and many requests in flight, skipping holes.
"""

from .endpoints import Endpoint, is_uri, open_destination, open_source
from .engine import CopyOptions, Progress, run_copy

__all__ = ["CopyOptions", "Endpoint", "Progress", "is_uri", "open_destination", "open_source",
           "run_copy"]
