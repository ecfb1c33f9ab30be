"""The domain's types, shared by every layer: model calls (messages, requests, completions)."""

from smartmix.domain.calls import Completion, Message, Request

__all__ = ["Completion", "Message", "Request"]
