"""How textgym splits text into words and normalises it: one splitter and one normaliser for every module.

:func:`words` is the word tokenisation of the guard metrics, distinct-n, repetition rate
and METEOR; :func:`normalize_text` is how generations are compared for copies on the
leaderboard. Task rewards that count words should use :func:`words` too, so that "a word"
means the same thing in a reward, a guard metric and a leaderboard column.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased word tokens: runs of word characters, and each other non-space character.

    >>> words("Don't stop, Bob!")
    ['don', "'", 't', 'stop', ',', 'bob', '!']
    """
    return _WORD.findall(text.lower())


def normalize_text(text: str) -> str:
    r"""``text`` with whitespace runs collapsed to one space, trimmed and case-folded.

    >>> normalize_text("  Love  it\n WONDERFUL ")
    'love it wonderful'
    """
    return " ".join(text.split()).casefold()


__all__ = ["normalize_text", "words"]
