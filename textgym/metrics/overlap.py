"""Reference-overlap metrics: ROUGE, BLEU and METEOR, per pair (and corpus BLEU).

Each takes ``predictions`` and ``references`` of equal length (see
:mod:`textgym.metrics.inputs`); an empty prediction scores as "nothing matched", a blank
reference is an error. The scoring libraries (rouge-score, sacrebleu, nltk) load on first use.
"""

from __future__ import annotations

import functools
from typing import Any

from textgym.metrics.inputs import check_multi_references, check_pairs
from textgym.text import words

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Per-pair ROUGE F-measures.

    The variant is the one of Google's ``rouge-score`` package with Porter stemming
    (``RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)``): text is lower-cased,
    every character other than ASCII letters and digits becomes a space, and tokens longer
    than three characters are Porter-stemmed. ``rougeL`` is the sentence-level longest
    common subsequence (not the summary-level ``rougeLsum``). Text with no ASCII letters or
    digits therefore has no tokens and scores 0.

    Args:
        predictions: Generated texts; an empty one scores 0.
        references: One reference text per prediction, not blank.

    Returns:
        ``{"rouge1": [...], "rouge2": [...], "rougeL": [...]}``, one F-measure in [0, 1] per pair.

    Raises:
        TypeError: An argument is not a list of strings.
        ValueError: The lists are empty or differ in length, or a reference is blank.

    >>> rouge(["the cat sat"], ["the cat sat down"])["rouge1"]
    [0.8571428571428571]
    """
    predictions, references = check_pairs(predictions, references)
    scorer = _rouge_scorer()
    result: dict[str, list[float]] = {key: [] for key in ROUGE_TYPES}
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)  # rouge-score's order is (target, prediction)
        for key in ROUGE_TYPES:
            result[key].append(float(scores[key].fmeasure))
    return result


def bleu(predictions: list[str], references: list[str] | list[list[str]]) -> dict[str, Any]:
    """Corpus BLEU (sacrebleu defaults) and smoothed sentence BLEU per prediction, on a 0-100 scale.

    Corpus BLEU is ``sacrebleu.metrics.BLEU()`` with its defaults: 13a tokenisation,
    case-sensitive, no smoothing beyond sacrebleu's default ``exp`` method, up to 4-grams.
    Sentence BLEU is ``BLEU(effective_order=True).sentence_score`` (``exp`` smoothing), the
    per-prediction variant sacrebleu recommends. Predictions may have different numbers
    of references.

    Args:
        predictions: Generated texts; an empty one matches nothing.
        references: Per prediction, one reference string or a non-empty list of them.

    Returns:
        A dict with ``"bleu"`` (corpus score), ``"sentence_bleu"`` (one score per prediction),
        ``"precisions"`` (the four corpus n-gram precisions, 0-100), ``"brevity_penalty"``,
        ``"length_ratio"``, ``"prediction_length"`` and ``"reference_length"`` (tokens).

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: The lists are empty or differ in length, or a reference is blank.

    >>> bleu(["the cat sat on the mat"], ["the cat sat on the mat"])["bleu"]
    100.0
    """
    from sacrebleu.metrics import BLEU

    predictions, grouped = check_multi_references(predictions, references)
    most = max(len(group) for group in grouped)
    # sacrebleu wants one stream per reference slot; None marks a slot a prediction lacks.
    streams = [[group[k] if k < len(group) else None for group in grouped] for k in range(most)]
    corpus = BLEU().corpus_score(predictions, streams)
    sentences = [sentence_bleu(prediction, group) for prediction, group in zip(predictions, grouped, strict=True)]
    return {
        "bleu": _clip(corpus.score, 100.0),
        "sentence_bleu": sentences,
        "precisions": [float(p) for p in corpus.precisions],
        "brevity_penalty": float(corpus.bp),
        "length_ratio": float(corpus.ratio),
        "prediction_length": int(corpus.sys_len),
        "reference_length": int(corpus.ref_len),
    }


def _clip(value: float, high: float) -> float:
    """Float ``value`` clipped to [0, high] (sacrebleu can return 100.00000000000004)."""
    return float(min(max(value, 0.0), high))


def sentence_bleu(prediction: str, references: list[str]) -> float:
    """Smoothed sentence BLEU (0-100) of one prediction: sacrebleu's ``BLEU(effective_order=True)``.

    >>> sentence_bleu("the cat sat on the mat", ["the cat sat on the mat"])
    100.0
    """
    from sacrebleu.metrics import BLEU

    return _clip(BLEU(effective_order=True).sentence_score(prediction, references).score, 100.0)


class _NoSynonyms:
    """A stand-in for nltk's WordNet reader that knows no synonyms: METEOR's last stage matches nothing."""

    def synsets(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


@functools.lru_cache(maxsize=1)
def _load_wordnet() -> Any | None:
    """The WordNet reader of nltk if its data is installed, else None (nothing is downloaded)."""
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        wordnet.synsets("dog")
    except (LookupError, OSError):
        return None
    return wordnet


def meteor(predictions: list[str], references: list[str] | list[list[str]]) -> dict[str, list[float]]:
    """Per-pair METEOR (nltk's implementation), with WordNet synonyms only where WordNet is installed.

    Texts are tokenised with :func:`words` and scored by ``nltk.translate.meteor_score``
    with its defaults (alpha=0.9, beta=3, gamma=0.5), taking the best of several references.
    nltk's METEOR aligns words in three stages: exact match, Porter stem match and WordNet
    synonym match (nltk looks up the synonyms of the Porter stems of the words left
    unmatched by the first two stages). The result key says which variant ran:

    * ``"meteor"``: all three stages; used when nltk can load the WordNet corpus.
    * ``"meteor_exact_stem"``: exact and stem matches only; used when WordNet data is not
      installed (nothing is downloaded). Scores can be lower than full METEOR's, never higher,
      so the two are reported under different names.

    Args:
        predictions: Generated texts; an empty one scores 0.
        references: Per prediction, one reference string or a non-empty list of them.

    Returns:
        ``{"meteor": [...]}`` or ``{"meteor_exact_stem": [...]}``, one score in [0, 1) per pair.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: The lists are empty or differ in length, or a reference is blank.
    """
    from nltk.translate.meteor_score import meteor_score

    predictions, grouped = check_multi_references(predictions, references)
    wordnet = _load_wordnet()
    key = "meteor" if wordnet is not None else "meteor_exact_stem"
    synonyms = wordnet if wordnet is not None else _NoSynonyms()
    scores = [
        float(meteor_score([words(reference) for reference in group], words(prediction), wordnet=synonyms))
        for prediction, group in zip(predictions, grouped, strict=True)
    ]
    return {key: scores}
