"""SparseCompletion: procedurally generated, verifiable one-answer tasks, rewarded once at the end.

Every problem is a pure function of its prompt id ``"family/dN/seed"`` (see
:func:`generate_problem`): the random numbers that build it come from SHA-256 of the id,
not from a library generator, so an id names the same problem on every platform and
NumPy / Python version, and the leaderboard can re-score replies from ids alone. The
env's ``rng`` draws the family, the difficulty and the problem seed.

Six families, each at difficulty 1, 2 and 3:

* ``arithmetic``: integer expressions (``+ -``; then ``* /`` and three terms; then
  parenthesised expressions whose result may be negative). Answer: a number.
* ``reverse``: the letters of a word in reverse order (short words, long words, random
  9-12 letter strings). Answer: a word.
* ``sort``: the letters of a word in alphabetical order (same three levels). Answer: a word.
* ``count``: how often a letter occurs in a word, in a random string, in a phrase
  (where it may occur 0 times). Answer: a number.
* ``date``: the weekday N days after a weekday; the date N days after a date; the date
  N days before or after a date across years and leap days. Answer: a weekday, a date.
* ``units``: a unit conversion with a rounding rule (metric scalings to a whole number;
  metric / imperial to 1 decimal place; with temperatures, gallons and speeds, to 2
  decimal places). Answer: a number.

Generators never pose a problem whose answer is among the values the question itself
states (e.g. ``10 - 5``, ``-40`` degrees, a palindrome to reverse, an already sorted
word), so echoing the question never scores. Answer extraction and verification are
the pure functions :func:`extract_answer` and :func:`verify`; their rules are written
in :func:`extract_answer`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import MAX_EMAX, MIN_EMIN, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Any, NamedTuple, TypeVar

import numpy as np

from textgym.core import TaskPrompt, TextTask, TurnResult, validate_text
from textgym.data import check_split, split_of
from textgym.rewards import reward_function
from textgym.text_env import TextEnv

FAMILIES = ("arithmetic", "reverse", "sort", "count", "date", "units")
DIFFICULTIES = (1, 2, 3)
ANSWER_KINDS = ("number", "word", "weekday", "date")
DEFAULT_SYSTEM_PROMPT = (
    "Solve the task. Reply with the final answer only, or, if you show your working, "
    "end with a line 'Answer: <final answer>'. Write numbers with digits."
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
#: Problem seeds drawn by ``reset`` lie in ``[0, SEED_RANGE)``; a prompt id may hold any
#: non-negative seed of up to 20 digits.
SEED_RANGE = 2**32
# Draws of problem seeds before reset gives up finding one in its split (each draw falls
# in the split with probability >= 0.1, so this is never reached in practice).
_MAX_SEED_DRAWS = 10_000

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


def _canonical_number(value: Decimal) -> str:
    """A number written without exponent, trailing zeros or a negative zero, every digit kept."""
    if value == 0:
        return "0"
    with localcontext() as context:
        # Precision and exponent range wide enough that dropping trailing zeros never rounds.
        context.prec, context.Emax, context.Emin = len(value.as_tuple().digits), MAX_EMAX, MIN_EMIN
        return format(value.normalize(), "f")


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


# (from unit, to unit, conversion); factors are exact definitions (1 mile = 1.609344 km).
_SCALINGS = (
    ("kilometers", "meters", _times("1000")),
    ("meters", "centimeters", _times("100")),
    ("kilograms", "grams", _times("1000")),
    ("liters", "milliliters", _times("1000")),
    ("hours", "minutes", _times("60")),
    ("minutes", "seconds", _times("60")),
    ("days", "hours", _times("24")),
)
_METRIC_IMPERIAL = (
    ("kilometers", "miles", _divided_by("1.609344")),
    ("miles", "kilometers", _times("1.609344")),
    ("kilograms", "pounds", _divided_by("0.45359237")),
    ("pounds", "kilograms", _times("0.45359237")),
    ("inches", "centimeters", _times("2.54")),
    ("centimeters", "inches", _divided_by("2.54")),
    ("feet", "meters", _times("0.3048")),
    ("meters", "feet", _divided_by("0.3048")),
)
_MORE_CONVERSIONS = (
    ("US gallons", "liters", _times("3.785411784")),
    ("liters", "US gallons", _divided_by("3.785411784")),
    ("miles per hour", "kilometers per hour", _times("1.609344")),
    ("kilometers per hour", "miles per hour", _divided_by("1.609344")),
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
        question = f"Convert {_canonical_number(value)} {source} to {target}. {_ROUNDING_RULES[places]}"
        return question, "number", _canonical_number(rounded)


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
        stated = {candidate.value for candidate in _candidates(question, kind)}
        if answer not in stated and extract_answer(answer, kind) == answer:
            return Problem(prompt_id, family, difficulty, question, kind, answer)


# -- answer extraction and verification ---------------------------------------------------


class _Candidate(NamedTuple):
    start: int
    end: int
    value: str


_NUMBER = re.compile(
    r"(?P<sign>(?<![\w)\]])[-−])?"  # a minus sign, unless it follows a word or a bracket (17-5)
    r"(?:(?P<whole>\d{1,3}(?:,\d{3})+(?!\d|,\d)|\d+)(?P<fraction>\.\d+)?|(?P<bare>\.\d+))"
)
_WORD = re.compile(r"[^\W\d_]+")
# Words that join alternatives, so never a word answer (generate_problem skips such answers).
_ALTERNATIVE_WORDS = frozenset({"or", "nor", "either", "maybe", "perhaps", "possibly"})
_WEEKDAY = re.compile(
    r"\b(?:(?i:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
    r"|Mon|Tues?|Wed|Thu(?:rs?)?|Fri|Sat|Sun|MON|TUE|WED|THU|FRI|SAT|SUN)\b"
)
_MONTH = (
    r"(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\b\.?"
)
_DATE = re.compile(
    r"(?<!\d)(?P<iso_year>\d{4})(?P<separator>[-/.])(?P<iso_month>\d{1,2})(?P=separator)(?P<iso_day>\d{1,2})(?!\d)"
    rf"|\b(?P<mdy_month>{_MONTH})\s+(?P<mdy_day>\d{{1,2}})(?i:st|nd|rd|th)?,?\s+(?P<mdy_year>\d{{4}})(?!\d)"
    rf"|(?<!\d)(?P<dmy_day>\d{{1,2}})(?i:st|nd|rd|th)?\s+(?i:of\s+)?(?P<dmy_month>{_MONTH}),?\s+(?P<dmy_year>\d{{4}})(?!\d)"
)
_MONTH_NUMBERS = {
    name: number for number, name in enumerate(("jan feb mar apr may jun jul aug sep oct nov dec").split(), 1)
}
_MARKER = re.compile(r"(?i:\banswer(?:\s+is)?[\s*_]*[:=])|\\boxed\{")
_EQUALS = re.compile(r"=>|->|[=→⇒≈]")
# Text that joins two values into a list or a choice: spaces, commas, full stops, "or", "and".
# Not "?" or "!": "What is 7 + 10? 17" answers the question it repeats.
_LIST_JOIN = re.compile(r"(?:[\s,;/|&()\[\]{}*_`'\".…]|\b(?i:or|and|nor|either|maybe|perhaps|possibly|probably)\b)*")
_ALTERNATIVE_JOIN = re.compile(r"(?:[\s,;()\[\]{}*_`'\".!?…]|[/|]|\b(?i:or|nor|either|maybe|perhaps|possibly)\b)*")
_ALTERNATIVE_MARK = re.compile(r"[/|]|\b(?i:or|nor|maybe|perhaps|possibly)\b")
_BRACKET = re.compile(r"[()\[\]{}]")


def _number_candidates(text: str) -> list[_Candidate]:
    candidates = []
    for match in _NUMBER.finditer(text):
        digits = match["bare"] or match["whole"].replace(",", "") + (match["fraction"] or "")
        # Signed in the string: arithmetic would round to the ambient decimal context's precision.
        value = Decimal(("-" if match["sign"] else "") + digits)
        candidates.append(_Candidate(match.start(), match.end(), _canonical_number(value)))
    return candidates


def _word_candidates(text: str) -> list[_Candidate]:
    return [
        _Candidate(match.start(), match.end(), match[0].lower())
        for match in _WORD.finditer(text)
        if match[0].lower() not in _ALTERNATIVE_WORDS
    ]


def _weekday_candidates(text: str) -> list[_Candidate]:
    by_prefix = {day[:3].lower(): day for day in WEEKDAYS}
    return [_Candidate(m.start(), m.end(), by_prefix[m[0][:3].lower()]) for m in _WEEKDAY.finditer(text)]


def _date_candidates(text: str) -> list[_Candidate]:
    candidates = []
    for match in _DATE.finditer(text):
        if match["iso_year"]:
            year, month, day = int(match["iso_year"]), int(match["iso_month"]), int(match["iso_day"])
        else:
            style = "mdy" if match["mdy_year"] else "dmy"
            year, day = int(match[f"{style}_year"]), int(match[f"{style}_day"])
            month = _MONTH_NUMBERS[match[f"{style}_month"][:3].lower()]
        try:
            value = dt.date(year, month, day).isoformat()
        except ValueError:
            continue  # Not a calendar date (e.g. 2023-02-30): not a date answer.
        candidates.append(_Candidate(match.start(), match.end(), value))
    return candidates


_CANDIDATE_FINDERS: dict[str, Callable[[str], list[_Candidate]]] = {
    "number": _number_candidates,
    "word": _word_candidates,
    "weekday": _weekday_candidates,
    "date": _date_candidates,
}


def _candidates(text: str, kind: str) -> list[_Candidate]:
    if kind not in _CANDIDATE_FINDERS:
        raise ValueError(f"unknown answer kind {kind!r}; expected one of {ANSWER_KINDS}")
    return _CANDIDATE_FINDERS[kind](text)


def _joined_as_alternatives(text: str, first: _Candidate, second: _Candidate, kind: str) -> bool:
    """Whether two different candidates are written as a list or a choice ("42 or 43", "17 25 42")."""
    if first.value == second.value:
        return False
    between = text[first.end : second.start]
    if kind == "word":
        # Prose separates words by spaces, so only an explicit choice joins two words.
        return bool(_ALTERNATIVE_JOIN.fullmatch(between) and _ALTERNATIVE_MARK.search(between))
    if not _LIST_JOIN.fullmatch(between):
        return False
    # "42 (or 43)" is a choice, "17 (7 + 10)" an explanation.
    return not _BRACKET.search(between) or bool(_ALTERNATIVE_MARK.search(between))


def _answer_after_marker(text: str, candidates: list[_Candidate], marker_end: int) -> int | None:
    """Index of the answer a marker introduces, or None.

    That is the first candidate after the marker, or after the last ``=`` / ``->`` on the
    marker's line when there is one ("Answer: 17 + 25 = 42").
    """
    line_end = text.find("\n", marker_end)
    line_end = len(text) if line_end < 0 else line_end
    start = marker_end
    for match in _EQUALS.finditer(text, marker_end, line_end):
        start = match.end()
    return next((index for index, candidate in enumerate(candidates) if candidate.start >= start), None)


def extract_answer(reply: str, kind: str) -> str | None:
    r"""The answer a reply gives, in canonical form, or None when it gives none or several.

    Candidates are the values of the answer ``kind`` written in the reply:

    * ``"number"``: numerals, with an optional minus sign (``-`` or ``−``, not after a
      letter, digit or bracket, so ``17-5`` holds 17 and 5), thousands separators
      (``1,234``) and decimals (``3.50``, ``.5``). Canonical form drops trailing zeros and
      a trailing ``.0``: ``3.50`` -> ``3.5``, ``42.0`` -> ``42``, ``1,234`` -> ``1234``.
      Number words ("forty-two"), exponents, decimal commas (``3,5``) and space
      separators (``1 234``) are not numbers.
    * ``"word"``: runs of letters, lower-cased (``**TENALP**`` -> ``tenalp``), except the
      choice words or / nor / either / maybe / perhaps / possibly.
    * ``"weekday"``: weekday names in any case, or three-letter abbreviations written
      ``Thu`` or ``THU`` (not ``sat`` or ``sun``); canonical form ``Thursday``.
    * ``"date"``: ``2024-03-05`` (or with ``/`` or ``.``), ``March 5, 2024``,
      ``5 March 2024``; canonical form ISO ``2024-03-05``. ``03/05/2024`` is ambiguous and
      not read; an impossible date such as ``2023-02-30`` is not a date.

    The answer is chosen as follows:

    1. An empty reply, or one with no candidate, gives None.
    2. If the reply has answer markers (``Answer:``, ``answer =``, ``Final answer:``,
       ``The answer is:``, ``**Answer:**``, any case; or ``\boxed{``), each marker's
       answer is the first candidate after it, or after the last ``=`` / ``->`` / ``≈``
       on the marker's line. Text after that is commentary and is ignored. Markers that
       introduce different answers give None; markers followed by no candidate give None.
    3. Otherwise the answer is the LAST candidate in the reply ("17 + 25 = 42" -> 42,
       "The answer is 42." -> 42, "42, no wait, 43" -> 43).
    4. The chosen answer is rejected (None) when a different candidate is joined to it
       as a list or a choice: for numbers, weekdays and dates, when only spaces, commas,
       semicolons, full stops, quotes, ``/ | & * _`` or the words or / and / nor / either /
       maybe / perhaps / possibly / probably stand between them ("42 or 43", "17 25 42",
       "41. 42"; but "What is 7 + 10? 17" gives 17), or brackets with "or", "nor", "/",
       "|" or a hedge word ("42 (or 43)"; but "Answer: 17 (7 + 10)" gives 17); for words, only
       when that text holds "or", "nor", "/" or "|" or a hedge word ("tenalp or tenlap").

    >>> extract_answer("17 + 25 = 42", "number")
    '42'
    >>> extract_answer("The answer is **1,234.0**.", "number")
    '1234'
    >>> extract_answer("Answer: 42 (I added 17 and 25)", "number")
    '42'
    >>> extract_answer("42, no wait, 43", "number")
    '43'
    >>> extract_answer("17 25 42", "number") is None
    True
    >>> extract_answer("Answer: 42\nAnswer: 43", "number") is None
    True
    >>> extract_answer("The reversed word is TENALP.", "word")
    'tenalp'
    >>> extract_answer("tenalp or tenlap", "word") is None
    True
    >>> extract_answer("It will be a thursday.", "weekday")
    'Thursday'
    >>> extract_answer("Answer: April 4th, 2024", "date")
    '2024-04-04'
    >>> extract_answer("", "number") is None
    True

    Args:
        reply: The agent's reply text.
        kind: One of :data:`ANSWER_KINDS`.

    Raises:
        TypeError: ``reply`` is not a string.
        ValueError: ``kind`` is unknown.
    """
    if not isinstance(reply, str):
        raise TypeError(f"reply must be a str, got {type(reply).__name__}: {reply!r:.80}")
    candidates = _candidates(reply, kind)
    if not candidates:
        return None
    marker_ends = [match.end() for match in _MARKER.finditer(reply)]
    if marker_ends:
        chosen = [_answer_after_marker(reply, candidates, end) for end in marker_ends]
        if None in chosen or len({candidates[index].value for index in chosen}) > 1:
            return None
    else:
        chosen = [len(candidates) - 1]
    for index in chosen:
        neighbours = [candidates[i] for i in (index - 1, index + 1) if 0 <= i < len(candidates)]
        for neighbour in neighbours:
            first, second = sorted((candidates[index], neighbour))
            if _joined_as_alternatives(reply, first, second, kind):
                return None
    return candidates[chosen[-1]].value


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


# -- the task and the env -----------------------------------------------------------------


def _check_families(families: Any) -> tuple[str, ...]:
    if families is None:
        return FAMILIES
    if isinstance(families, str):
        families = [families]
    if not isinstance(families, (list, tuple)) or not families:
        raise ValueError(f"families must be a non-empty list of names from {FAMILIES}, got {families!r}")
    for family in families:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; expected names from {FAMILIES}")
    if len(set(families)) != len(families):
        raise ValueError(f"families lists a name twice: {list(families)!r}")
    return tuple(families)


def _check_difficulties(difficulty: Any) -> tuple[int, ...]:
    levels = difficulty if isinstance(difficulty, (list, tuple)) else [difficulty]
    if not levels:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES} or a non-empty list of them, got {difficulty!r}")
    for level in levels:
        if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, np.integer)) or level not in DIFFICULTIES:
            raise ValueError(f"unknown difficulty {level!r}; expected one of {DIFFICULTIES} or a list of them")
    if len(set(levels)) != len(levels):
        raise ValueError(f"difficulty lists a level twice: {list(levels)!r}")
    return tuple(int(level) for level in levels)


def _check_format_reward(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"format_reward must be a number in [0, 1), got {value!r}")
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"format_reward must be a number in [0, 1), got {value!r}")
    return float(value)


class SparseCompletionTask(TextTask):
    """Text-level SparseCompletion: see :class:`SparseCompletionEnv`."""

    def __init__(
        self,
        split: str = "train",
        difficulty: int | Sequence[int] = 1,
        families: str | Sequence[str] | None = None,
        format_reward: float = 0.0,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        self.split = check_split(split)
        self.difficulties = _check_difficulties(difficulty)
        self.families = _check_families(families)
        self.format_reward = _check_format_reward(format_reward)
        self.system_prompt = validate_text(system_prompt, "system_prompt")
        self._problem: Problem | None = None

    def draw_prompt_id(self, rng: np.random.Generator) -> str:
        """Draw a family and a difficulty, then problem seeds until one is in this split."""
        family = self.families[int(rng.integers(len(self.families)))]
        difficulty = self.difficulties[int(rng.integers(len(self.difficulties)))]
        for _ in range(_MAX_SEED_DRAWS):
            prompt_id = make_prompt_id(family, difficulty, int(rng.integers(SEED_RANGE)))
            if split_of(prompt_id) == self.split:
                return prompt_id
        raise RuntimeError(f"no {family}/d{difficulty} problem in split {self.split!r} after {_MAX_SEED_DRAWS} draws")

    def reset(self, rng: np.random.Generator, options: Mapping[str, Any] | None = None) -> TaskPrompt:
        """Draw a problem of this split (or rebuild ``options["prompt_id"]``) and pose it.

        Raises:
            ValueError: An unknown option, a malformed prompt id, or one of another split.
        """
        options = dict(options or {})
        prompt_id = options.pop("prompt_id", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; SparseCompletion accepts 'prompt_id'")
        if prompt_id is None:
            prompt_id = self.draw_prompt_id(rng)
        else:
            parse_prompt_id(prompt_id)
            if split_of(prompt_id) != self.split:
                raise ValueError(
                    f"prompt_id {prompt_id!r} belongs to split {split_of(prompt_id)!r}, not this env's {self.split!r}"
                )
        problem = generate_problem(prompt_id)
        self._problem = problem
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": problem.question}]
        info = {"family": problem.family, "difficulty": problem.difficulty, "answer_kind": problem.kind}
        return TaskPrompt(messages, problem.prompt_id, info)

    def step(self, reply: str) -> TurnResult:
        """Verify the reply: 1.0 if correct, ``format_reward`` if parsed but wrong, else 0.0; then stop."""
        if self._problem is None:
            raise RuntimeError("SparseCompletionTask.step() called without a posed problem; call reset() first")
        problem, self._problem = self._problem, None
        verdict = verify(problem, reply)
        components = {
            "correct": 1.0 if verdict.correct else 0.0,
            "format": self.format_reward if verdict.parsed and not verdict.correct else 0.0,
        }
        info = {
            "parsed": verdict.parsed,
            "correct": verdict.correct,
            "family": problem.family,
            "difficulty": problem.difficulty,
            "answer_kind": problem.kind,
            "reward_components": components,
        }
        return TurnResult(components["correct"] + components["format"], True, [], info)


class SparseCompletionEnv(TextEnv):
    """SparseCompletion: answer one generated, verifiable question; rewarded once, at the end.

    ## Description
    Each episode poses one procedurally generated problem with a single checkable answer,
    from six families: integer ``arithmetic``, ``reverse`` a word's letters, ``sort`` a
    word's letters, ``count`` a letter's occurrences, a ``date`` question (weekday after N
    days, date plus or minus N days) and a ``units`` conversion with a rounding rule, at
    difficulty 1, 2 or 3. The conversation is a system message stating the answer format
    and the question as the user message; the agent's one reply is its answer. Problems
    are infinite and rebuilt from their prompt id alone (``"family/dN/seed"``, see
    :func:`generate_problem`). The same task backs three ids, one per action granularity
    (see :class:`textgym.text_env.TextEnv`).

    ## Action Space
    * ``TextGym/SparseCompletion-v0``: ``Discrete(V)``, the next token of the reply (V =
      49,152 for the default SmolLM2 tokenizer). An end token ends the reply; the id
      sets ``max_reply_tokens=16`` (answers are short).
    * ``TextGym/SparseCompletionCandidate-v0``: ``Discrete(K)``, one of K replies that the
      env's LM proposes (its greedy reply first; ``action_masks()`` marks duplicates invalid).
    * ``TextGym/SparseCompletionUtterance-v0``: ``MultiDiscrete([V] * max_reply_tokens)``,
      the whole reply as token ids, read up to the first end token.

    ## Observation Space
    ``Dict(input_ids=Box(int32), attention_mask=Box(int8))`` of length
    ``max_context_tokens`` holding the chat-template context, left-padded; the candidate
    level adds ``candidate_ids`` and ``candidate_mask`` (K x ``max_reply_tokens``, flattened).

    ## Rewards
    Sparse: every step before the reply ends gives 0. When it ends, :func:`verify` reads
    the answer (rules in :func:`extract_answer`: the answer after an ``Answer:`` marker,
    else the last value of the answer's kind in the reply; lists and choices of different
    values are unparsed) and the reward is
    ``1.0`` if it equals the reference, ``format_reward`` if an answer was parsed but is
    wrong, and ``0.0`` if none could be parsed (empty reply, no value of the right kind,
    conflicting answers). ``info`` of the last step holds ``parsed``, ``correct``,
    ``family``, ``difficulty``, ``answer_kind`` and ``reward_components``
    (``{"correct": 1.0 or 0.0, "format": format_reward or 0.0}``, summing to the reward).
    The reference answer is never in observations, messages or info. For word answers
    almost any reply parses, so the format reward means little there.

    ## Starting State
    A family drawn uniformly from ``families`` and a difficulty uniformly from
    ``difficulty`` with ``self.np_random``, then problem seeds in ``[0, 2**32)`` until the
    prompt id falls in the env's split; or the problem named by
    ``reset(options={"prompt_id": ...})``, of any family and difficulty but of this split.

    ## Episode End
    Terminated after the one reply. At token level, also truncated when the reply
    reaches ``max_reply_tokens`` without an end token (the reply is still scored).

    ## Arguments
    ``split`` (``"train"``, ``"validation"``, ``"test"``; ``textgym.data.split_of(prompt_id)``
    decides, so the splits are disjoint), ``difficulty`` (1, 2 or 3, or a list of them;
    default 1), ``families`` (a list of names from ``arithmetic``, ``reverse``, ``sort``,
    ``count``, ``date``, ``units``; default all), ``format_reward`` (in [0, 1), default
    0.0), ``system_prompt``, plus the :class:`textgym.text_env.TextEnv` arguments
    (``granularity``, ``model``, ``max_context_tokens``, ``max_reply_tokens``,
    ``num_candidates``, ``proposal_temperature``, ``render_mode``).

    ## Version History
    * v0: Initial version.
    """

    task_class = SparseCompletionTask


#: The batch reward in TRL's shape (see :func:`textgym.rewards.reward_function`).
sparse_completion_reward = reward_function("TextGym/SparseCompletion-v0")
