"""pytest fixtures for the test OpenAI server. Import them into a test module::

    from openai_fixtures import openai_server, provider  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai_server import RunningServer, run_server


@pytest.fixture(scope="module")
def openai_server() -> Iterator[RunningServer]:
    """One server per test module (starting uvicorn costs ~0.1 s)."""
    with run_server() as server:
        yield server


@pytest.fixture
def provider(openai_server: RunningServer) -> Iterator[RunningServer]:
    """The module's server, reset to well-behaved defaults with an empty request log."""
    openai_server.control.reset()
    yield openai_server
    openai_server.control.reset()
