"""Diversity and degeneration metrics of generated text: distinct-n, repetition rate, self-BLEU.

N-grams are of :func:`textgym.text.words` tokens and never cross text boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence

from textgym.checks import check_integer
from textgym.metrics.inputs import text_list
from textgym.metrics.overlap import sentence_bleu
from textgym.text import words


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n: unique n-grams over all n-grams, counted across all ``texts``.

    N-grams of :func:`words` tokens never cross text boundaries. Texts shorter than ``n``
    contribute none; with no n-gram at all the result is 0.0.

    Args:
        texts: Texts to pool; empty strings are allowed.
        n: N-gram order, >= 1.

    Returns:
        A fraction in [0, 1].

    Raises:
        TypeError: ``texts`` is not a list of strings or ``n`` is not an int.
        ValueError: ``texts`` is empty or ``n`` < 1.

    >>> distinct_n(["a b a", "b c"], 1)  # tokens a b a b c: 3 unique of 5
    0.6
    """
    texts = text_list(texts, "texts")
    n = check_integer(n, "n", minimum=1)
    grams = [gram for text in texts for gram in _ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(text: str, n: int = 2) -> float:
    """Fraction of the n-grams of one text that repeat an earlier n-gram of the same text.

    ``(total - unique) / total`` over the :func:`words` n-grams of ``text``: 0.0 for text
    with no repeated n-gram (or none at all), close to 1.0 for a degenerate loop.

    Args:
        text: One text; an empty one gives 0.0.
        n: N-gram order, >= 1.

    Returns:
        A fraction in [0, 1).

    Raises:
        TypeError: ``text`` is not a string or ``n`` is not an int.
        ValueError: ``n`` < 1.

    >>> repetition_rate("a b a b a b")  # bigrams ab ba ab ba ab: 2 unique of 5
    0.6
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}: {text!r:.80}")
    n = check_integer(n, "n", minimum=1)
    grams = _ngrams(words(text), n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def self_bleu(texts: list[str]) -> float:
    """Self-BLEU: mean sentence BLEU (0-100) of each text against all the others as references.

    Each score is ``sacrebleu`` sentence BLEU with ``effective_order=True`` (``exp``
    smoothing), as in :func:`textgym.metrics.overlap.bleu`. Higher means less diverse. Empty texts score 0 and
    are valid references that match nothing.

    Args:
        texts: At least two texts.

    Returns:
        The mean, in [0, 100].

    Raises:
        TypeError: ``texts`` is not a list of strings.
        ValueError: Fewer than two texts.
    """
    texts = text_list(texts, "texts", min_len=2)
    scores = [sentence_bleu(text, texts[:i] + texts[i + 1 :]) for i, text in enumerate(texts)]
    return sum(scores) / len(scores)
