"""Comparators: what "agrees with the reference" means for a task.

``make_comparator(name, labels=None, **options)`` builds one of:

* ``exact``: equal text after normalisation (case, whitespace, surrounding quotes/punctuation);
* ``label``: both outputs map to the same label of a closed set;
* ``numeric``: the same final number ("#### 42", "\\boxed{42}", "The answer is 42", else the last number);
* ``regex``: the same text captured by a user pattern with one capture group;
* ``choice``: the same multiple-choice letter ("B", "(B)", "B) Paris", "The answer is B", or an option's text);
* ``json``: field-wise equal JSON objects (all fields or a subset, each optionally normalised);
* ``semantic``: embeddings of the two answers within cosine ``theta`` (a local MiniLM model; approximate).

Every comparator has ``parse(text) -> str | None`` (the canonical answer, None when the output holds no
answer the comparator can read) and ``agree(a, b) -> bool``. ``agree`` accepts raw outputs or values
``parse`` returned: parsed values are :class:`Canonical` strings, never parsed twice. An output that does
not parse never agrees with anything, so an unreadable answer counts against the guarantee, as a
disagreement; it never stops a run.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from smartmix.errors import ConfigError
from smartmix.tasks import Comparator, ExactComparator, LabelComparator, normalize_answer

__all__ = [
    "COMPARATORS",
    "Canonical",
    "ChoiceComparator",
    "Comparator",
    "ExactComparator",
    "JsonComparator",
    "LabelComparator",
    "NumericComparator",
    "RegexComparator",
    "SemanticComparator",
    "comparator_name",
    "make_comparator",
    "parse_number",
]


class Canonical(str):
    """An answer a comparator already parsed: ``parse`` returns it unchanged."""

    __slots__ = ()


class _Parsing:
    """Shared ``parse``/``agree`` logic: subclasses define ``_parse`` (text -> canonical text or None)
    and, when equality of canonical texts is not the rule, ``_same``."""

    name = "?"

    def parse(self, text: str | None) -> str | None:
        if text is None:
            return None
        if isinstance(text, Canonical):
            return text
        try:
            value = self._parse(str(text))
        except (ValueError, TypeError, ArithmeticError, RecursionError):
            return None  # whatever the model wrote, an unreadable answer is a disagreement, not a crash
        return None if value is None else Canonical(value)

    def agree(self, a: str | None, b: str | None) -> bool:
        pa = self.parse(a)
        if pa is None:
            return False
        pb = self.parse(b)
        return pb is not None and self._same(pa, pb)

    def _parse(self, text: str) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _same(self, a: str, b: str) -> bool:
        return a == b


# ---------------------------------------------------------------------------------------------------
# Numbers

_NUM = r"[-+\u2212]?\s?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?|[-+\u2212]?\.\d+"
_NUMBER = re.compile(rf"(?<![\w.])(?:{_NUM})(?:[eE][-+]?\d+)?(?![\w])|(?<![\w.])(?:{_NUM})(?=[a-zA-Z%])")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_MARKERS = (
    re.compile(r"####\s*(.*)"),
    re.compile(r"(?:final answer|the answer|answer)\s*(?:is|=|:)\s*[:\s]*(.*)", re.IGNORECASE),
)


def _to_fraction(token: str) -> Fraction:
    token = token.replace("\u2212", "-").replace("$", "").replace(",", "").replace(" ", "")
    if "/" in token:
        num, den = token.split("/", 1)
        return Fraction(num) / Fraction(den)
    return Fraction(token)


def _first_number(text: str) -> Fraction | None:
    for match in _NUMBER.finditer(text):
        try:
            return _to_fraction(match.group(0))
        except (ValueError, ZeroDivisionError):
            continue
    return None


def _last_number(text: str) -> Fraction | None:
    for match in reversed(list(_NUMBER.finditer(text))):
        try:
            return _to_fraction(match.group(0))
        except (ValueError, ZeroDivisionError):
            continue
    return None


def parse_number(text: str, *, last_number: bool = True) -> Fraction | None:
    """The final number of an answer, exactly, or None.

    Looked for in this order: after the last "####" (GSM8K style), inside the last ``\\boxed{...}``,
    after the last "answer is"/"answer:", and (``last_number``) the last number anywhere. Thousands
    separators, signs (including U+2212), "$", decimals, ``a/b`` and ``\\frac{a}{b}`` are understood.
    """
    text = _FRAC.sub(r"\1/\2", text)
    boxed = _BOXED.findall(text)
    hash_marker = text.rfind("####")
    if hash_marker >= 0:
        number = _first_number(text[hash_marker + 4 :])
        if number is not None:
            return number
    if boxed:
        number = _first_number(boxed[-1])
        if number is not None:
            return number
    found = list(_MARKERS[1].finditer(text))
    for match in reversed(found):
        number = _first_number(match.group(1)[:80])
        if number is not None:
            return number
    return _last_number(text) if last_number else None


def _number_text(value: Fraction) -> str:
    """A canonical spelling: integers and finite decimals as decimals, other fractions as ``p/q``."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    digits = 0
    scaled = value
    while scaled.denominator != 1:
        scaled *= 10
        digits += 1
    sign = "-" if scaled < 0 else ""
    body = str(abs(scaled.numerator)).rjust(digits + 1, "0")
    return f"{sign}{body[:-digits]}.{body[-digits:]}"


class NumericComparator(_Parsing):
    """The final number of each answer (see :func:`parse_number`), equal within tolerance.

    ``rel_tol``/``abs_tol``: |a - b| <= max(rel_tol * max(|a|, |b|), abs_tol); both 0 (the default) mean
    exactly equal numbers (42, 42.0, "42.00" and "$42" agree). ``last_number=False``: only answers with
    an explicit final-answer marker parse.
    """

    name = "numeric"

    def __init__(self, rel_tol: float = 0.0, abs_tol: float = 0.0, last_number: bool = True):
        for key, value in (("rel_tol", rel_tol), ("abs_tol", abs_tol)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 or math.isinf(value):
                raise ConfigError(f"numeric comparator: {key} must be a number >= 0, got {value!r}")
        self.rel_tol = float(rel_tol)
        self.abs_tol = float(abs_tol)
        self.last_number = bool(last_number)

    def _parse(self, text: str) -> str | None:
        number = parse_number(text, last_number=self.last_number)
        return None if number is None else _number_text(number)

    def _same(self, a: str, b: str) -> bool:
        if a == b:
            return True
        if not (self.rel_tol or self.abs_tol):
            return False
        x, y = _to_fraction(a), _to_fraction(b)
        return abs(x - y) <= max(self.rel_tol * max(abs(x), abs(y)), self.abs_tol)


# ---------------------------------------------------------------------------------------------------
# Multiple choice


class ChoiceComparator(_Parsing):
    """The multiple-choice letter of each answer.

    Read from: a bare letter ("B", "(B)", "**B.**"), a letter opening the answer and followed by ")",
    ".", ":" ("B) Paris", "(B) Paris"), the last "answer is B"/"Answer: (B)"/"option B", or, when
    ``options`` (the option texts, in letter order) are known, an answer equal to one option's text.
    ``letters``: the allowed letters (default "ABCDEFGHIJ").
    """

    name = "choice"

    def __init__(self, letters: str | Sequence[str] = "ABCDEFGHIJ", options: Sequence[str] | None = None):
        letters = [str(x).strip().upper() for x in letters]
        if not letters or any(len(x) != 1 or not x.isalpha() for x in letters) or len(set(letters)) != len(letters):
            raise ConfigError(f"choice comparator: letters must be distinct single letters, got {letters!r}")
        self.letters = tuple(letters)
        if options is not None and (isinstance(options, str) or len(options) > len(letters)):
            raise ConfigError(
                f"choice comparator: options must be a list of at most {len(letters)} option texts, got {options!r}"
            )
        self.options = {normalize_answer(o): letters[k] for k, o in enumerate(options or ())}
        if "" in self.options:
            raise ConfigError("choice comparator: an option text is empty")
        cls = "".join(self.letters)
        self._bare = re.compile(rf"^[(\[]?([{cls}])[)\].:]?$", re.IGNORECASE)
        self._lead = re.compile(rf"^[(\[]?([{cls}])(?:[)\].:]|\s*-\s)")
        self._phrase = re.compile(
            rf"(?i:answer\s*(?:is|:)|(?:option|choice)(?:\s+is)?)\s*[:\s]*[(\[]?(?:([{cls}])\b|([{cls.lower()}])(?=[)\].:]|\s*$))"
        )

    def _parse(self, text: str) -> str | None:
        norm = normalize_answer(text.replace("*", ""))
        if not norm:
            return None
        upper = norm.upper()
        if (m := self._bare.match(upper)) is not None:
            return m.group(1)
        if norm in self.options:
            return self.options[norm]
        stripped = text.replace("*", "").strip()
        if (m := self._lead.match(stripped)) is not None:
            return m.group(1).upper()
        found = list(self._phrase.finditer(stripped))
        if found:
            m = found[-1]
            return (m.group(1) or m.group(2)).upper()
        for key, letter in sorted(self.options.items(), key=lambda kv: -len(kv[0])):
            if norm.startswith(key) and (len(norm) == len(key) or not norm[len(key)].isalnum()):
                return letter
        return None


# ---------------------------------------------------------------------------------------------------
# Regex


_FLAGS = {"i": re.IGNORECASE, "s": re.DOTALL, "m": re.MULTILINE, "x": re.VERBOSE}


class RegexComparator(_Parsing):
    """The text a user pattern captures (its one group), normalised unless ``normalize=False``.

    ``which``: the ``"last"`` (default) or ``"first"`` match; ``flags``: any of "i", "s", "m", "x".
    An output the pattern does not match is unparseable.
    """

    name = "regex"

    def __init__(self, pattern: str | None = None, which: str = "last", flags: str = "", normalize: bool = True):
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError('the regex comparator needs a pattern with one capture group, e.g. pattern = "Answer: (\\w+)"')
        bad = [f for f in flags if f not in _FLAGS]
        if bad:
            raise ConfigError(f"regex comparator: unknown flag(s) {''.join(bad)!r}; use any of i, s, m, x")
        value = 0
        for f in flags:
            value |= _FLAGS[f]
        try:
            self.pattern = re.compile(pattern, value)
        except re.error as exc:
            raise ConfigError(f"regex comparator: the pattern {pattern!r} is not a valid regular expression ({exc})") from None
        if self.pattern.groups != 1:
            raise ConfigError(
                f"regex comparator: the pattern {pattern!r} has {self.pattern.groups} capture groups; it needs "
                "exactly one (use (?:...) for the others)"
            )
        if which not in ("first", "last"):
            raise ConfigError(f"regex comparator: which must be 'first' or 'last', got {which!r}")
        self.which = which
        self.normalize = bool(normalize)

    def _parse(self, text: str) -> str | None:
        matches = list(self.pattern.finditer(text))
        if not matches:
            return None
        got = matches[-1 if self.which == "last" else 0].group(1)
        if got is None:
            return None
        got = normalize_answer(got) if self.normalize else got
        return got or None


# ---------------------------------------------------------------------------------------------------
# JSON

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def _json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in an output: the whole text, a ```json fenced block, or the first {...} in it."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, ValueError):
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def _norm_text(value: Any) -> Any:
    return normalize_answer(value) if isinstance(value, str) else _norm_default(value)


def _norm_number(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return _number_text(Fraction(value)) if math.isfinite(value) else str(value)
    number = parse_number(str(value))
    return None if number is None else _number_text(number)


def _norm_set(value: Any) -> Any:
    if isinstance(value, list):
        return sorted({json.dumps(_norm_default(v), sort_keys=True) for v in value})
    return _norm_default(value)


def _norm_exact(value: Any) -> Any:
    return value


def _norm_default(value: Any) -> Any:
    """Strings normalised like ``exact``; numbers as exact decimals (1 == 1.0); lists and objects inside-out."""
    if isinstance(value, str):
        return normalize_answer(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return _norm_number(value)
    if isinstance(value, list):
        return [_norm_default(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _norm_default(v) for k, v in value.items()}
    return value


_JSON_NORMS: dict[str, Callable[[Any], Any]] = {
    "default": _norm_default,
    "text": _norm_text,
    "exact": _norm_exact,
    "number": _norm_number,
    "set": _norm_set,
}


class JsonComparator(_Parsing):
    """Field-wise equal JSON objects.

    The object is the whole output, a fenced ```json block, or the first ``{...}`` in the text. ``fields``:
    compare only these keys (a missing key counts as null); default every key of both objects.
    ``normalize``: per-field rule, one of "default" (strings as ``exact``, numbers exactly, recursively),
    "text", "exact" (as written), "number" (the number in the value), "set" (a list as an unordered set).
    An output without a JSON object is unparseable.
    """

    name = "json"

    def __init__(self, fields: Sequence[str] | None = None, normalize: Mapping[str, str] | None = None):
        if fields is not None and (isinstance(fields, str) or not all(isinstance(f, str) for f in fields)):
            raise ConfigError(f"json comparator: fields must be a list of key names, got {fields!r}")
        self.fields = tuple(fields) if fields is not None else None
        normalize = dict(normalize or {})
        for key, rule in normalize.items():
            if rule not in _JSON_NORMS:
                raise ConfigError(
                    f"json comparator: field {key!r} has the unknown normalisation {rule!r}; "
                    f"use one of {', '.join(_JSON_NORMS)}"
                )
        self.normalize = normalize

    def _parse(self, text: str) -> str | None:
        obj = _json_object(text)
        if obj is None:
            return None
        keys = self.fields if self.fields is not None else sorted(obj)
        canon = {k: _JSON_NORMS[self.normalize.get(k, "default")](obj.get(k)) for k in keys}
        return json.dumps(canon, sort_keys=True, ensure_ascii=False)

    def _same(self, a: str, b: str) -> bool:
        if a == b:
            return True
        if self.fields is not None:
            return False
        # every key of both objects: a key one side lacks counts as null
        x, y = json.loads(a), json.loads(b)
        return all(x.get(k) == y.get(k) for k in set(x) | set(y))


# ---------------------------------------------------------------------------------------------------
# Semantic


class SemanticComparator(_Parsing):
    """Approximate: two answers agree when their sentence embeddings have cosine >= ``theta``.

    Embeddings come from all-MiniLM-L6-v2 run locally (:class:`smartmix.router.embedding.Embedder`,
    loaded on first use). Equal normalised texts always agree. The guarantee then holds for *this*
    agreement, which can call two different answers the same (and the same answer in other words
    different): check ``theta`` on a sample of your own answers.
    """

    name = "semantic"

    def __init__(self, theta: float = 0.9, model_dir: str | None = None, embedder: Any | None = None):
        if isinstance(theta, bool) or not isinstance(theta, int | float) or not -1.0 <= theta <= 1.0:
            raise ConfigError(f"semantic comparator: theta must be a cosine in [-1, 1], got {theta!r}")
        self.theta = float(theta)
        self._model_dir = model_dir
        self._embedder = embedder
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _parse(self, text: str) -> str | None:
        return normalize_answer(text) or None

    def _vector(self, text: str) -> Any:
        with self._lock:
            if text not in self._cache:
                if self._embedder is None:
                    from smartmix.router.embedding import Embedder

                    self._embedder = Embedder(self._model_dir)
                if len(self._cache) > 100_000:
                    self._cache.clear()
                self._cache[text] = self._embedder.encode([text])[0]
            return self._cache[text]

    def _same(self, a: str, b: str) -> bool:
        if a == b:
            return True
        return float(self._vector(a) @ self._vector(b)) >= self.theta


# ---------------------------------------------------------------------------------------------------
# The factory


def _exact(**options: Any) -> Comparator:
    if options:
        raise ConfigError(f"the exact comparator takes no options, got {', '.join(sorted(options))}")
    return ExactComparator()


COMPARATORS: dict[str, Callable[..., Comparator]] = {
    "exact": _exact,
    "label": LabelComparator,
    "numeric": NumericComparator,
    "regex": RegexComparator,
    "choice": ChoiceComparator,
    "json": JsonComparator,
    "semantic": SemanticComparator,
}


def make_comparator(name: str | None = "exact", labels: Sequence[str] | None = None, **options: Any) -> Comparator:
    """The comparator called ``name`` with its ``options``.

    ``labels`` makes the default a ``label`` comparator (and is what ``label`` needs); ``choice`` takes
    them as its option texts when no ``options=`` is given. A wrong name or option is a ConfigError.
    """
    if name is None:
        name = "label" if labels else "exact"
    key = str(name).strip().lower()
    if key == "exact" and labels:
        key = "label"
    if key not in COMPARATORS:
        raise ConfigError(f"unknown comparator '{name}'; choose one of: {', '.join(COMPARATORS)}")
    if key == "label":
        if not labels:
            raise ConfigError("the label comparator needs labels: --labels a,b,c or [task] labels = [...]")
        if options:
            raise ConfigError(f"the label comparator takes no options besides labels, got {', '.join(sorted(options))}")
        return LabelComparator(list(labels))
    if key == "choice" and labels and "options" not in options:
        options["options"] = list(labels)
    try:
        return COMPARATORS[key](**options)
    except TypeError as exc:
        raise ConfigError(f"{key} comparator: bad option(s) {sorted(options)} ({exc})") from None


def comparator_name(comparator: Comparator) -> str:
    """The registered name of a comparator ("exact", "label", ...), or its class name."""
    if isinstance(comparator, LabelComparator):
        return "label"
    if isinstance(comparator, ExactComparator):
        return "exact"
    return str(getattr(comparator, "name", type(comparator).__name__))
