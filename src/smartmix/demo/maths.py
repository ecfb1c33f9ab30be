"""The maths demo task: one- and two-step arithmetic word problems with known answers, and a few-shot prompt.

:func:`arithmetic_items` generates the problems deterministically from a seed (no download); every item has
``question`` and ``answer`` (an integer). The models answer in a short chain of thought ending in
"The answer is N."; agreement with the reference is judged on the final number (``--compare numeric``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["MATHS_PROMPT", "MathsProblem", "arithmetic_items"]

_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kira", "Liam")
_THINGS = ("apples", "pencils", "stickers", "marbles", "cookies", "stamps", "coins", "books")


@dataclass(frozen=True)
class MathsProblem:
    id: str
    question: str
    answer: int


def _problem(rng: random.Random, k: int) -> MathsProblem:
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    kind = k % 4
    if kind in (0, 2):
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        q = f"{name} has {a} bags with {b} {thing} in each. How many {thing} is that?"
        value = a * b
    elif kind == 1:
        a, b = rng.randint(1, 10), rng.randint(1, 10)
        q = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have?"
        value = a + b
    else:
        a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 5)
        q = f"{name} has {a} bags with {b} {thing} in each, and {c} loose {thing}. How many {thing} is that in all?"
        value = a * b + c
    return MathsProblem(f"maths-{k:04d}", q, value)


def arithmetic_items(n: int = 150, seed: int = 0) -> list[MathsProblem]:
    """``n`` word problems (products, sums, products, and a two-step product-plus-sum, in turn), the same
    for the same ``seed``. Easy enough for the demo's 135M/270M models to get a good share right."""
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = random.Random(f"smartmix-maths-{seed}")
    return [_problem(rng, k) for k in range(n)]


_EXAMPLES = (
    ("Tom has 3 pens and gets 4 more. How many pens does Tom have?", "3 + 4 = 7. The answer is 7."),
    ("Mia has 15 shells and gives away 6. How many shells are left?", "15 - 6 = 9. The answer is 9."),
    ("Sam has 5 bags with 2 balls in each. How many balls is that?", "5 * 2 = 10. The answer is 10."),
    ("Zoe has 4 bags with 3 cards in each, and 2 loose cards. How many cards is that in all?",
     "4 * 3 = 12 and 12 + 2 = 14. The answer is 14."),
)

MATHS_PROMPT: str = (
    "Solve each problem. Show the steps, then end with 'The answer is N.'\n\n"
    + "".join(f"Q: {q}\nA: {a}\n\n" for q, a in _EXAMPLES)
    + "Q: {question}\nA:"
)
