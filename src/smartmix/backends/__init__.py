"""Backends: real providers, recorded outputs and the simulator behind one async protocol."""

from smartmix.backends.base import Backend, Completion, Message, Request

__all__ = ["Backend", "Completion", "Message", "Request"]
