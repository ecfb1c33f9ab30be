"""Ctrl-C and SIGTERM during a run: stop issuing calls, let those in flight finish, then stop.

The first signal asks the engine to start no new call (:meth:`~smartmix.engine.Engine.stop`); calls in
flight finish and are journaled, so nothing paid is lost and a rerun pays for nothing twice. If they have
not finished after ``grace_s`` seconds, or on a second signal, the run is cancelled at once (answers
still in flight are then lost; a provider may bill them).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


@contextlib.contextmanager
def stop_on_signals(
    stop: Callable[[str], None], *, grace_s: float = 30.0, say: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Within the running event loop's task: route SIGINT/SIGTERM to ``stop`` (first) and to cancelling
    the task (second, or ``grace_s`` after the first). Does nothing outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    state: dict[str, object] = {"count": 0, "timer": None}

    def abort() -> None:
        if task is not None and not task.done():
            task.cancel()

    def on_signal(signum: int) -> None:
        state["count"] = int(state["count"]) + 1  # type: ignore[call-overload]
        name = NAMES.get(signum, f"signal {signum}")
        if state["count"] == 1:
            if say is not None:
                say(f"{name}: stopping — no new calls; waiting up to {grace_s:.0f} s for the calls in flight "
                    "(press Ctrl-C again to abort now)")
            stop(f"stopped by {name}")
            state["timer"] = loop.call_later(grace_s, abort)
        else:
            if say is not None:
                say(f"{name} again: aborting now; answers still in flight are lost")
            abort()

    installed = []
    try:
        for signum in NAMES:
            try:
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):  # no signal support here (Windows loop)
                pass
        yield
    finally:
        timer = state["timer"]
        if isinstance(timer, asyncio.TimerHandle):
            timer.cancel()
        for signum in installed:
            loop.remove_signal_handler(signum)


__all__ = ["stop_on_signals"]
