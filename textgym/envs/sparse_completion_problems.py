"""SparseCompletion's problems: prompt ids and the generators that build a problem from one.

Every problem is a pure function of its prompt id ``"family/dN/seed"`` (see
:func:`generate_problem`): the random numbers that build it come from SHA-256 of the id,
not from a library generator, so an id names the same problem on every platform and
NumPy / Python version, and the leaderboard can re-score replies from ids alone.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Any, TypeVar

from textgym.envs.sparse_completion_answers import WEEKDAYS, answer_candidates, canonical_number, extract_answer

FAMILIES = ("arithmetic", "reverse", "sort", "count", "date", "units")
DIFFICULTIES = (1, 2, 3)
#: Problem seeds drawn by ``reset`` lie in ``[0, SEED_RANGE)``; a prompt id may hold any
#: non-negative seed of up to 20 digits.
SEED_RANGE = 2**32

_SHORT_WORDS = tuple(
    """
    bread chair cloud dance eagle flame grape horse juice knife lemon magic night ocean
    piano queen river snake tiger voice water zebra brick candy drum fish gold hill kite
    lamp moon nest pear rain ship tree wolf yarn bell coin desk frog goat harp iron king
    leaf milk nose park rock salt tent vase wind book cake farm gift hand lake mint note
    plum rose sock town star moth crab duck bear corn shoe bird mask wave
    """.split()
)
_LONG_WORDS = tuple(
    """
    planet garden window bottle candle dragon forest guitar hammer island jacket kitten
    ladder marble needle orange pencil rabbit saddle teapot umbrella velvet wizard yellow
    blanket castle dolphin feather giraffe harvest lantern mountain notebook octopus
    painter quarter rainbow sandwich thunder vehicle whistle backpack calendar diamond
    elephant festival hospital keyboard language midnight necklace pumpkin question
    sunshine treasure universe volcano weekend chimney compass cottage monster pirate
    rocket silver spider tomato turtle violin winter
    """.split()
)

T = TypeVar("T")


# -- prompt ids and deterministic draws ---------------------------------------------------

# ASCII only: Python's \d also matches other scripts' digits, which would give a problem several ids.
_PROMPT_ID = re.compile(r"(?P<family>[a-z]+)/d(?P<difficulty>\d)/(?P<seed>0|[1-9]\d{0,19})", re.ASCII)


def make_prompt_id(family: str, difficulty: int, seed: int) -> str:
    """The prompt id of a problem: ``"family/d<difficulty>/<seed>"``.

    >>> make_prompt_id("arithmetic", 2, 123456789)
    'arithmetic/d2/123456789'
    """
    return f"{family}/d{difficulty}/{seed}"


def parse_prompt_id(prompt_id: Any) -> tuple[str, int, int]:
    """Split a prompt id into family, difficulty and seed, or raise naming what is wrong.

    The seed must be written canonically (no sign, no leading zeros), so each problem
    has exactly one id and one split.

    >>> parse_prompt_id("date/d3/42")
    ('date', 3, 42)
    >>> parse_prompt_id("date/d3/042")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: malformed prompt_id 'date/d3/042'; expected 'family/dN/seed' with a canonical seed, ...

    Raises:
        ValueError: The id is malformed or names an unknown family or difficulty.
    """
    match = _PROMPT_ID.fullmatch(prompt_id) if isinstance(prompt_id, str) else None
    if match is None:
        raise ValueError(
            f"malformed prompt_id {prompt_id!r}; expected 'family/dN/seed' with a canonical seed, "
            "e.g. 'arithmetic/d2/123456789'"
        )
    family, difficulty = match["family"], int(match["difficulty"])
    if family not in FAMILIES:
        raise ValueError(f"prompt_id {prompt_id!r} names unknown family {family!r}; expected one of {FAMILIES}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(
            f"prompt_id {prompt_id!r} names unknown difficulty {difficulty}; expected one of {DIFFICULTIES}"
        )
    return family, difficulty, int(match["seed"])


class _Draws:
    """Uniform integers that depend only on ``key``: SHA-256 of ``key#counter``.

    Its stream is fixed by this code alone (unlike NumPy's and Python's generators, whose
    algorithms may change between versions), so a prompt id always names the same problem.
    """

    def __init__(self, key: str) -> None:
        self._key = key
        self._counter = 0

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)`` (rejection sampling, so exactly uniform)."""
        limit = 2**64 - 2**64 % n
        while True:
            digest = hashlib.sha256(f"{self._key}#{self._counter}".encode()).digest()
            self._counter += 1
            value = int.from_bytes(digest[:8], "big")
            if value < limit:
                return value % n

    def integer(self, low: int, high: int) -> int:
        """A uniform integer in ``[low, high]``."""
        return low + self.below(high - low + 1)

    def choice(self, options: Sequence[T]) -> T:
        """A uniform element of ``options``."""
        return options[self.below(len(options))]

    def letters(self, length: int, alphabet: str = string.ascii_lowercase) -> str:
        """``length`` letters drawn uniformly from ``alphabet``."""
        return "".join(self.choice(alphabet) for _ in range(length))


# -- problems -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One generated problem.

    Attributes:
        prompt_id: ``"family/dN/seed"``; :func:`generate_problem` rebuilds the problem from it.
        family: One of :data:`FAMILIES`.
        difficulty: One of :data:`DIFFICULTIES`.
        question: The user message.
        kind: How answers are read and compared, one of :data:`ANSWER_KINDS`.
        answer: The reference answer in canonical form (see :func:`extract_answer`). It
            never goes into messages or info.
    """

    prompt_id: str
    family: str
    difficulty: int
    question: str
    kind: str
    answer: str


def _word_source(draws: _Draws, difficulty: int) -> tuple[str, str]:
    """A word to transform and what to call it: short word, long word, random string."""
    if difficulty == 1:
        return draws.choice(_SHORT_WORDS), "word"
    if difficulty == 2:
        return draws.choice(_LONG_WORDS), "word"
    return draws.letters(draws.integer(9, 12)), "string"


def _arithmetic(draws: _Draws, difficulty: int) -> tuple[str, str, str]:
    if difficulty == 1:
        a, b = draws.integer(2, 20), draws.integer(2, 20)
        if draws.below(2):
            expression, value = f"{a} + {b}", a + b
        else:
            a, b = max(a, b), min(a, b)
            expression, value = f"{a} - {b}", a - b
    elif difficulty == 2:
        form = draws.below(3)
        if form == 0:
            a, b = draws.integer(3, 19), draws.integer(11, 99)
            expression, value = f"{a} * {b}", a * b
        elif form == 1:
            quotient, b = draws.integer(3, 25), draws.integer(3, 12)
            expression, value = f"{quotient * b} / {b}", quotient
        else:
            a, b, c = draws.integer(10, 999), draws.integer(10, 999), draws.integer(10, 999)
            expression, value = f"{a} + {b} - {c}", a + b - c
    else:
        a, b, c, d = draws.integer(10, 99), draws.integer(10, 99), draws.integer(2, 20), draws.integer(2, 20)
        form = draws.below(3)
        if form == 0:
            expression, value = f"({a} + {b}) * {c} - {d}", (a + b) * c - d
        elif form == 1:
            expression, value = f"{a} * {c} - {b} * {d}", a * c - b * d
        else:
            expression, value = f"({a} - {b}) * ({c} + {d})", (a - b) * (c + d)
    return f"What is {expression}?", "number", str(value)


def _reverse(draws: _Draws, difficulty: int) -> tuple[str, str, str]:
    word, noun = _word_source(draws, difficulty)
    question = f"Reverse the letters of the {noun} '{word}'. Give the result as one lowercase word."
    return question, "word", word[::-1]


def _sort(draws: _Draws, difficulty: int) -> tuple[str, str, str]:
    word, noun = _word_source(draws, difficulty)
    question = f"Write the letters of the {noun} '{word}' in alphabetical order, as one lowercase word."
    return question, "word", "".join(sorted(word))


def _count(draws: _Draws, difficulty: int) -> tuple[str, str, str]:
    if difficulty == 1:
        text, noun = draws.choice(_SHORT_WORDS), "word"
        letter = draws.choice(text)
    elif difficulty == 2:
        alphabet = "".join(sorted({draws.choice(string.ascii_lowercase) for _ in range(4)}))
        text, noun = draws.letters(draws.integer(10, 16), alphabet), "string"
        letter = draws.choice(alphabet)
    else:
        words = [draws.choice(_SHORT_WORDS + _LONG_WORDS) for _ in range(draws.integer(3, 5))]
        text, noun = " ".join(words), "phrase"
        # One time in five any letter, so the answer may be 0.
        letter = draws.choice(string.ascii_lowercase) if draws.below(5) == 0 else draws.choice(text.replace(" ", ""))
    question = f"How many times does the letter '{letter}' appear in the {noun} '{text}'?"
    return question, "number", str(text.count(letter))


def _date(draws: _Draws, difficulty: int) -> tuple[str, str, str]:
    if difficulty == 1:
        start = draws.below(7)
        days = draws.choice([n for n in range(1, 31) if n % 7])
        question = f"Today is {WEEKDAYS[start]}. What day of the week will it be in {days} days?"
        return question, "weekday", WEEKDAYS[(start + days) % 7]
    if difficulty == 2:
        start = dt.date(2000, 1, 1) + dt.timedelta(days=draws.below(31 * 365))
        days, sign = draws.integer(1, 60), 1
    else:
        start = dt.date(1990, 1, 1) + dt.timedelta(days=draws.below(50 * 365))
        days, sign = draws.integer(100, 1000), draws.choice((1, -1))
    direction = "after" if sign == 1 else "before"
    question = f"What is the date {days} days {direction} {start.isoformat()}? Give the date as YYYY-MM-DD."
    return question, "date", (start + dt.timedelta(days=sign * days)).isoformat()


def _times(factor: str) -> Callable[[Decimal], Decimal]:
    return lambda x: x * Decimal(factor)


def _divided_by(factor: str) -> Callable[[Decimal], Decimal]:
    return lambda x: x / Decimal(factor)


def _both_ways(source: str, target: str, operator: str, factor: str) -> tuple[tuple[str, str, Any], ...]:
    """``source`` to ``target`` by ``operator`` (``"*"`` or ``"/"``) ``factor``, then back by the inverse."""
    forward, backward = (_times, _divided_by) if operator == "*" else (_divided_by, _times)
    return (source, target, forward(factor)), (target, source, backward(factor))


# (from unit, to unit, conversion); factors are exact definitions (1 mile = 1.609344 km).
_SCALINGS = tuple(
    (source, target, _times(factor))
    for source, target, factor in (
        ("kilometers", "meters", "1000"),
        ("meters", "centimeters", "100"),
        ("kilograms", "grams", "1000"),
        ("liters", "milliliters", "1000"),
        ("hours", "minutes", "60"),
        ("minutes", "seconds", "60"),
        ("days", "hours", "24"),
    )
)
_METRIC_IMPERIAL = (
    *_both_ways("kilometers", "miles", "/", "1.609344"),
    *_both_ways("kilograms", "pounds", "/", "0.45359237"),
    *_both_ways("inches", "centimeters", "*", "2.54"),
    *_both_ways("feet", "meters", "*", "0.3048"),
)
_MORE_CONVERSIONS = (
    *_both_ways("US gallons", "liters", "*", "3.785411784"),
    *_both_ways("miles per hour", "kilometers per hour", "*", "1.609344"),
)
_TEMPERATURES = (
    ("degrees Celsius", "degrees Fahrenheit", lambda c: c * 9 / 5 + 32),
    ("degrees Fahrenheit", "degrees Celsius", lambda f: (f - 32) * 5 / 9),
)
_ROUNDING_RULES = {
    0: "Round to the nearest whole number.",
    1: "Round to 1 decimal place.",
    2: "Round to 2 decimal places.",
}
# Conversions compute in a context of their own: the problem an id names must not depend on the caller's.
_UNITS_CONTEXT = Context(prec=60)


def _units(draws: _Draws, difficulty: int) -> tuple[str, str, str]:
    while True:
        if difficulty == 1:
            (source, target, convert), value, places = draws.choice(_SCALINGS), Decimal(draws.integer(2, 99)), 0
        elif difficulty == 2:
            (source, target, convert) = draws.choice(_METRIC_IMPERIAL)
            value, places = Decimal(draws.integer(2, 200)), 1
        else:
            conversions = _METRIC_IMPERIAL + _MORE_CONVERSIONS + _TEMPERATURES
            index = draws.below(len(conversions))
            source, target, convert = conversions[index]
            temperature = index >= len(conversions) - len(_TEMPERATURES)
            tenths = draws.integer(-400, 1200) if temperature else draws.integer(10, 3000)
            value, places = _UNITS_CONTEXT.divide(tenths, 10), 2
        with localcontext(_UNITS_CONTEXT):
            exact = convert(value)
            scaled = exact.scaleb(places)
            if scaled - scaled.to_integral_value(rounding=ROUND_FLOOR) == Decimal("0.5"):
                continue  # A tie at the rounding digit: avoid it rather than name a tie rule.
            rounded = exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        question = f"Convert {canonical_number(value)} {source} to {target}. {_ROUNDING_RULES[places]}"
        return question, "number", canonical_number(rounded)


_GENERATORS: dict[str, Callable[[_Draws, int], tuple[str, str, str]]] = {
    "arithmetic": _arithmetic,
    "reverse": _reverse,
    "sort": _sort,
    "count": _count,
    "date": _date,
    "units": _units,
}


@functools.lru_cache(maxsize=4096)
def generate_problem(prompt_id: str) -> Problem:
    """Build the problem a prompt id names; the same id always gives the same problem.

    Problems whose answer the question itself states, or whose answer
    :func:`extract_answer` would not read back, are skipped: the generator draws again
    from the same stream, so the result still depends on the id alone.

    >>> problem = generate_problem("arithmetic/d1/7")
    >>> problem.question, problem.kind
    ('What is 7 + 10?', 'number')

    Raises:
        ValueError: The id is malformed or names an unknown family or difficulty.
    """
    family, difficulty, _ = parse_prompt_id(prompt_id)
    draws = _Draws(prompt_id)
    while True:
        question, kind, answer = _GENERATORS[family](draws, difficulty)
        stated = {candidate.value for candidate in answer_candidates(question, kind)}
        if answer not in stated and extract_answer(answer, kind) == answer:
            return Problem(prompt_id, family, difficulty, question, kind, answer)


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` says of a reply.

    Attributes:
        correct: The extracted answer equals the reference.
        parsed: An answer could be extracted (see :func:`extract_answer`).
        extracted: The extracted answer in canonical form, or None.
    """

    correct: bool
    parsed: bool
    extracted: str | None


def verify(problem: Problem, reply: str) -> Verdict:
    """Score a reply: extract its answer (:func:`extract_answer`) and compare canonical forms.

    Canonical forms make the comparison exact: numbers compare by value (``3.50`` equals
    ``3.5``; for a "round to 2 decimal places" question ``3.497`` does not equal ``3.50``,
    since the rounding is part of the answer), words ignore case, weekdays and dates
    compare as days.

    >>> problem = generate_problem("arithmetic/d1/7")
    >>> verify(problem, "7 + 10 = 17")
    Verdict(correct=True, parsed=True, extracted='17')
    >>> verify(problem, "I think it is 18.")
    Verdict(correct=False, parsed=True, extracted='18')
    >>> verify(problem, "no idea")
    Verdict(correct=False, parsed=False, extracted=None)
    """
    extracted = extract_answer(reply, problem.kind)
    return Verdict(correct=extracted == problem.answer, parsed=extracted is not None, extracted=extracted)
