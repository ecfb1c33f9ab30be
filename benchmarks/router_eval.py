"""Evaluate the per-prompt router on the shared recorded outputs: ``smartmix bench --suite router`` with
every option (sets, feature kinds, latency). The evaluation itself is :mod:`smartmix.bench.router_eval`.

    python benchmarks/router_eval.py                      # all six sets
    python benchmarks/router_eval.py --sets mmlu-qwen-oai --skip-latency
"""

from __future__ import annotations

import sys

from smartmix.bench.router_eval import main

if __name__ == "__main__":
    sys.exit(main())
