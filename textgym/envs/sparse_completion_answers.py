"""SparseCompletion's answers: reading the answer a reply gives, and checking it.

:func:`extract_answer` reads a reply's answer of a kind (number, word, weekday, date) in
canonical form; :func:`verify` compares it with a problem's reference. Both are pure
functions, so the leaderboard re-scores replies from their text alone. The rules are
written in :func:`extract_answer`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import MAX_EMAX, MIN_EMIN, Decimal, localcontext
from typing import NamedTuple

ANSWER_KINDS = ("number", "word", "weekday", "date")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def canonical_number(value: Decimal) -> str:
    """A number written without exponent, trailing zeros or a negative zero, every digit kept."""
    if value == 0:
        return "0"
    with localcontext() as context:
        # Precision and exponent range wide enough that dropping trailing zeros never rounds.
        context.prec, context.Emax, context.Emin = len(value.as_tuple().digits), MAX_EMAX, MIN_EMIN
        return format(value.normalize(), "f")


class Candidate(NamedTuple):
    """A value of an answer kind written in a text: where it stands and its canonical form."""

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


def _number_candidates(text: str) -> list[Candidate]:
    candidates = []
    for match in _NUMBER.finditer(text):
        digits = match["bare"] or match["whole"].replace(",", "") + (match["fraction"] or "")
        # Signed in the string: arithmetic would round to the ambient decimal context's precision.
        value = Decimal(("-" if match["sign"] else "") + digits)
        candidates.append(Candidate(match.start(), match.end(), canonical_number(value)))
    return candidates


def _word_candidates(text: str) -> list[Candidate]:
    return [
        Candidate(match.start(), match.end(), match[0].lower())
        for match in _WORD.finditer(text)
        if match[0].lower() not in _ALTERNATIVE_WORDS
    ]


def _weekday_candidates(text: str) -> list[Candidate]:
    by_prefix = {day[:3].lower(): day for day in WEEKDAYS}
    return [Candidate(m.start(), m.end(), by_prefix[m[0][:3].lower()]) for m in _WEEKDAY.finditer(text)]


def _date_candidates(text: str) -> list[Candidate]:
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
        candidates.append(Candidate(match.start(), match.end(), value))
    return candidates


_CANDIDATE_FINDERS: dict[str, Callable[[str], list[Candidate]]] = {
    "number": _number_candidates,
    "word": _word_candidates,
    "weekday": _weekday_candidates,
    "date": _date_candidates,
}


def answer_candidates(text: str, kind: str) -> list[Candidate]:
    """Every value of answer ``kind`` written in ``text``, in order (see :func:`extract_answer`).

    Raises:
        ValueError: ``kind`` is not one of :data:`ANSWER_KINDS`.
    """
    if kind not in _CANDIDATE_FINDERS:
        raise ValueError(f"unknown answer kind {kind!r}; expected one of {ANSWER_KINDS}")
    return _CANDIDATE_FINDERS[kind](text)


def _joined_as_alternatives(text: str, first: Candidate, second: Candidate, kind: str) -> bool:
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


def _answer_after_marker(text: str, candidates: list[Candidate], marker_end: int) -> int | None:
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

    >>> replies = ["17 + 25 = 42", "The answer is **1,234.0**.", "Answer: 42 (I added 17 and 25)", "42, no wait, 43"]
    >>> [extract_answer(reply, "number") for reply in replies]
    ['42', '1234', '42', '43']
    >>> [extract_answer(reply, "number") for reply in ["17 25 42", "Answer: 42\nAnswer: 43", ""]]
    [None, None, None]
    >>> extract_answer("The reversed word is TENALP.", "word"), extract_answer("tenalp or tenlap", "word")
    ('tenalp', None)
    >>> extract_answer("It will be a thursday.", "weekday"), extract_answer("Answer: April 4th, 2024", "date")
    ('Thursday', '2024-04-04')

    Args:
        reply: The agent's reply text.
        kind: One of :data:`ANSWER_KINDS`.

    Raises:
        TypeError: ``reply`` is not a string.
        ValueError: ``kind`` is unknown.
    """
    if not isinstance(reply, str):
        raise TypeError(f"reply must be a str, got {type(reply).__name__}: {reply!r:.80}")
    candidates = answer_candidates(reply, kind)
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
