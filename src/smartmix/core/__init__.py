"""One execution core: the driver, the chain rule and the answer sources it runs on.

- :mod:`smartmix.core.chain`: the chain rule (``keeps``: score strictly above threshold, NaN never keeps);
- :mod:`smartmix.core.driver`: profile rounds and plan application over any answer source;
- :mod:`smartmix.core.source`: the answer-source protocol and its arrays;
- :mod:`smartmix.core.offline`: answers from known arrays (validity runs, benchmarks) and ``simulate``;
- the live source, models behind a journal, is :class:`smartmix.engine.Engine`.
"""

from smartmix.core.chain import keeps
from smartmix.core.driver import Execution, execute, run_inline
from smartmix.core.source import Answers, AnswerSource, Observation

__all__ = ["AnswerSource", "Answers", "Execution", "Observation", "execute", "keeps", "run_inline"]
