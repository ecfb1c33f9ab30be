"""Streamed runs: replays of recorded outputs and simulations at a few bytes per item, on the one driver.

- :mod:`smartmix.stream.columns`: a recorded-outputs file read into per-model columns, a chunk at a time;
- :mod:`smartmix.stream.source`: the answer source the core's driver runs on (the offline source plus the
  engine's books: bill, answer counts, warnings);
- :mod:`smartmix.stream.output`: the answers read back and written chunk by chunk, atomically;
- :mod:`smartmix.stream.run`: the runs themselves (``replay``, ``simulate_streamed``) and when they apply.

``smartmix run`` and ``smartmix.run`` stream automatically whenever they can (see docs/scale.md).
"""
