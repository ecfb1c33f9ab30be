"""One exception hierarchy. Every message says what is wrong and what to do about it."""

from __future__ import annotations


class SmartmixError(Exception):
    """Base class of every error smartmix raises on purpose.

    The CLI prints these as a one-paragraph message (no traceback) and exits with status 2.
    """

    exit_code = 2


class ConfigError(SmartmixError):
    """The job is described wrongly: options, config file, pool, guarantee."""


class DataError(SmartmixError):
    """The input items cannot be read or do not fit the template."""


class TemplateError(DataError):
    """A prompt template names a field that an item does not have."""


class PriceError(ConfigError):
    """A model has no known price and none was given."""


class UnknownModelError(ConfigError):
    """A model name is not in the pool or not in the recorded outputs."""


class ProviderError(SmartmixError):
    """A provider failed in a way retries did not cure (after all attempts)."""

    exit_code = 3


class AnswerParseError(SmartmixError):
    """A model's output could not be turned into an answer."""


class BudgetExceeded(SmartmixError):
    """The next call could push spending over the --max-cost cap."""

    exit_code = 4


class RunInterrupted(SmartmixError):
    """A signal (Ctrl-C, SIGTERM) stopped the run: calls in flight were let finish and journaled."""

    exit_code = 130


class RunLocked(SmartmixError):
    """Another process is running the same job in the same run directory."""

    exit_code = 5


class MissingExtraError(SmartmixError):
    """An optional dependency is needed for this feature."""

    def __init__(self, feature: str, extra: str, package: str):
        super().__init__(
            f"{feature} needs the optional package '{package}'. Install it with: pip install 'smartmix[{extra}]'"
        )
