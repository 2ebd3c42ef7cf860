"""The ways textgym splits text into words, each named and defined once.

Three splitters, because three definitions need different words and changing any one
of them would change a reward or a metric already measured:

* :func:`whitespace_words`: what "words" means in a length (a summary's word count, a
  source cut to ``max_source_words``): runs of non-whitespace, punctuation attached.
* :func:`bare_words`: the words compared by Dialogue's word-overlap F1: lower-cased,
  ASCII punctuation replaced by spaces (so ``"Paris."`` matches ``"paris"``).
* :func:`words`: the tokens of the diversity and repetition metrics, METEOR and the
  guard metrics: lower-cased runs of word characters, and each other non-space character
  as a token of its own (so ``"!!!"`` is three repeated tokens, not one word).

:func:`normalize_text` is how generations are compared for copies on the leaderboard.
"""

from __future__ import annotations

import re
import string

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_WORD_OR_SYMBOL = re.compile(r"\w+|[^\w\s]")
_NON_SPACE = re.compile(r"\S+")


def whitespace_words(text: str) -> list[str]:
    r"""Runs of non-whitespace characters, as written (``str.split()``).

    >>> whitespace_words("  Hello,  world!\n")
    ['Hello,', 'world!']
    """
    return text.split()


def truncate_words(text: str, max_words: int) -> tuple[str, bool]:
    r"""Keep the first ``max_words`` of :func:`whitespace_words` of ``text``, layout kept.

    Returns:
        The kept text and whether anything was cut.

    >>> truncate_words("one two\nthree four", 3)
    ('one two\nthree', True)
    """
    spans = list(_NON_SPACE.finditer(text))
    if len(spans) <= max_words:
        return text, False
    return text[: spans[max_words - 1].end()], True


def bare_words(text: str) -> list[str]:
    """Lower-cased words with ASCII punctuation replaced by spaces.

    >>> bare_words("Don't stop, Bob!")
    ['don', 't', 'stop', 'bob']
    """
    return _PUNCTUATION.sub(" ", text.lower()).split()


def words(text: str) -> list[str]:
    """Lower-cased word tokens: runs of word characters, and each other non-space character.

    >>> words("Don't stop, Bob!")
    ['don', "'", 't', 'stop', ',', 'bob', '!']
    """
    return _WORD_OR_SYMBOL.findall(text.lower())


def normalize_text(text: str) -> str:
    r"""``text`` with whitespace runs collapsed to one space, trimmed and case-folded.

    >>> normalize_text("  Love  it\n WONDERFUL ")
    'love it wonderful'
    """
    return " ".join(text.split()).casefold()


__all__ = ["bare_words", "normalize_text", "truncate_words", "whitespace_words", "words"]
