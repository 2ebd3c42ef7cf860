"""Text metrics as plain functions: the one implementation behind every metric of textgym.

The task rewards, the guard metrics and the ``evaluate`` modules under ``textgym/metrics``
all call these functions. They live by family (:mod:`~textgym.metrics.overlap`,
:mod:`~textgym.metrics.diversity`, :mod:`~textgym.metrics.perplexity`,
:mod:`~textgym.metrics.similarity`, argument checks in :mod:`~textgym.metrics.inputs`);
this module gathers them under one name. Importing it is cheap: the heavy libraries
(torch, transformers, sacrebleu, rouge-score, nltk) load on first use, and models are
cached per process.

Conventions:

* Reference-based metrics take ``predictions`` and ``references`` of equal length and
  return per-pair scores (one float per pair) unless the metric is defined on a corpus
  (corpus BLEU).
* An empty prediction is a possible model output and scores as "nothing matched"; an
  empty or whitespace-only reference is an error.
* Bad input raises :class:`TypeError` (wrong type) or :class:`ValueError` (wrong value)
  with a message that names the argument and, for lists, the index. No function returns
  NaN.

Word tokenisation (METEOR, distinct-n, repetition rate) is :func:`textgym.text.words`:
lower-cased runs of word characters, each other non-space character a token of its own.
"""

from __future__ import annotations

from textgym.metrics.diversity import distinct_n, repetition_rate, self_bleu
from textgym.metrics.inputs import text_list
from textgym.metrics.overlap import ROUGE_TYPES, bleu, meteor, rouge, sentence_bleu
from textgym.metrics.perplexity import perplexity
from textgym.metrics.similarity import (
    SENTENCE_ENCODER_MAX_TOKENS,
    SENTENCE_ENCODER_PACKAGE,
    embed,
    semantic_similarity,
    sentence_encoder_dir,
)
from textgym.text import words

__all__ = [
    "ROUGE_TYPES",
    "SENTENCE_ENCODER_MAX_TOKENS",
    "SENTENCE_ENCODER_PACKAGE",
    "bleu",
    "distinct_n",
    "embed",
    "meteor",
    "perplexity",
    "repetition_rate",
    "rouge",
    "self_bleu",
    "semantic_similarity",
    "sentence_bleu",
    "sentence_encoder_dir",
    "text_list",
    "words",
]
