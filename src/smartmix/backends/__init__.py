"""Backends: real providers, recorded outputs and the simulator behind one async protocol."""

from smartmix.backends.base import Backend

__all__ = ["Backend"]
