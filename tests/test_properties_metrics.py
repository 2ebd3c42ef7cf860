"""Property tests of every metric: textgym.metrics.functional and the evaluate modules of textgym.metrics.load.

On arbitrary text every score is finite and inside its documented range, pairs are scored
independently of their batch, and bad arguments (lists of different lengths, non-strings,
blank references) raise TypeError or ValueError naming the argument and the index.
"""

import math
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from text_strategies import references, texts

from textgym.metrics import functional, load

NOT_TEXT = st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=4), st.lists(st.integers(), max_size=2))
# Not a text and not a list (a list of strings is a valid group of references for BLEU and METEOR).
NOT_TEXT_OR_LIST = st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=4))
# One (prediction, reference) list pair per example; references are never blank.
PAIRS = st.lists(st.tuples(texts, references), min_size=1, max_size=4)
# Model-backed metrics are slower per example: fewer, shorter texts.
SHORT_PAIRS = st.lists(st.tuples(texts, references), min_size=1, max_size=3)


def unzip(pairs):
    return [p for p, _ in pairs], [r for _, r in pairs]


def assert_fraction(value, low=0.0, high=1.0):
    assert isinstance(value, float) and math.isfinite(value) and low <= value <= high, value


# -- reference-based metrics ------------------------------------------------------------------


@settings(max_examples=150)
@given(PAIRS)
def test_rouge_in_range_and_pairwise(pairs):
    predictions, refs = unzip(pairs)
    scores = functional.rouge(predictions, refs)
    assert set(scores) == set(functional.ROUGE_TYPES)
    for values in scores.values():
        assert len(values) == len(pairs)
        for value in values:
            assert_fraction(value)
    for index, (prediction, ref) in enumerate(pairs):
        single = functional.rouge([prediction], [ref])
        assert {key: values[index] for key, values in scores.items()} == {key: v[0] for key, v in single.items()}


@settings(max_examples=100)
@given(references)
@example("東京 👩‍💻")
def test_rouge_copy_scores_one_when_it_has_tokens(text):
    tokens = re.search("[a-z0-9]", text.lower()) is not None  # rouge-score keeps ASCII letters and digits
    scores = functional.rouge([text, ""], [text, text])
    assert scores["rouge1"] == scores["rougeL"] == [1.0 if tokens else 0.0, 0.0]


@settings(max_examples=100)
@given(st.lists(st.tuples(texts, st.lists(references, min_size=1, max_size=3)), min_size=1, max_size=4))
def test_bleu_in_range(pairs):
    predictions, groups = unzip(pairs)
    result = functional.bleu(predictions, groups)
    assert_fraction(result["bleu"], 0.0, 100.0)
    assert len(result["sentence_bleu"]) == len(pairs)
    for score in result["sentence_bleu"]:
        assert_fraction(score, 0.0, 100.0)
    assert len(result["precisions"]) == 4
    for precision in result["precisions"]:
        assert_fraction(precision, 0.0, 100.0)
    assert_fraction(result["brevity_penalty"])
    assert math.isfinite(result["length_ratio"]) and result["length_ratio"] >= 0.0
    assert result["prediction_length"] >= 0 and result["reference_length"] >= 0
    # One reference given as a string is the same as a list of one.
    singles = [group[0] for group in groups]
    assert functional.bleu(predictions, singles) == functional.bleu(predictions, [[r] for r in singles])
    # Sentence BLEU of a prediction depends on that pair only.
    assert functional.bleu(predictions[:1], groups[:1])["sentence_bleu"] == result["sentence_bleu"][:1]


@settings(max_examples=100)
@given(PAIRS)
def test_meteor_in_range_and_pairwise(pairs):
    predictions, refs = unzip(pairs)
    result = functional.meteor(predictions, refs)
    (key,) = result
    assert key in ("meteor", "meteor_exact_stem")
    assert len(result[key]) == len(pairs)
    for prediction, ref, score in zip(predictions, refs, result[key], strict=True):
        assert_fraction(score)
        assert score < 1.0  # the fragmentation penalty is never 0 when something matched
        assert functional.meteor([prediction], [ref])[key] == [score]
        if not functional.words(prediction):
            assert score == 0.0


@settings(max_examples=30)
@given(st.sampled_from(["rouge", "bleu", "meteor"]), PAIRS, st.data())
def test_reference_metrics_reject_bad_arguments(name, pairs, data):
    metric = getattr(functional, name)
    predictions, refs = unzip(pairs)
    with pytest.raises(ValueError, match="differ in length"):
        metric(predictions, refs + ["one more"])
    with pytest.raises(TypeError, match="predictions must be a list of strings"):
        metric(predictions[0], refs)
    index = data.draw(st.integers(0, len(pairs) - 1), label="index")
    bad = data.draw(NOT_TEXT_OR_LIST, label="bad value")
    with pytest.raises(TypeError, match=re.escape(f"predictions[{index}] must be a string")):
        metric(predictions[:index] + [bad] + predictions[index + 1 :], refs)
    with pytest.raises(TypeError, match=re.escape(f"references[{index}]")):
        metric(predictions, refs[:index] + [bad] + refs[index + 1 :])
    blank = data.draw(st.sampled_from(["", " ", "\n\t"]), label="blank")
    with pytest.raises(ValueError, match=re.escape(f"references[{index}] is empty or whitespace only")):
        metric(predictions, refs[:index] + [blank] + refs[index + 1 :])
    with pytest.raises(ValueError, match="predictions is empty"):
        metric([], [])


# -- diversity --------------------------------------------------------------------------------


@settings(max_examples=150)
@given(st.lists(texts, min_size=1, max_size=5), st.integers(1, 4))
def test_distinct_n_and_repetition_in_range(batch, n):
    distinct = functional.distinct_n(batch, n)
    assert_fraction(distinct)
    grams = [tuple(w[i : i + n]) for w in map(functional.words, batch) for i in range(len(w) - n + 1)]
    assert distinct == (len(set(grams)) / len(grams) if grams else 0.0)
    for text in batch:
        rate = functional.repetition_rate(text, n)
        assert_fraction(rate)
        assert rate < 1.0
        assert (rate == 0.0) == (functional.distinct_n([text], n) in (0.0, 1.0))


@settings(max_examples=60)
@given(st.lists(texts, min_size=2, max_size=4))
def test_self_bleu_in_range(batch):
    score = functional.self_bleu(batch)
    assert_fraction(score, 0.0, 100.0)
    assert functional.self_bleu(list(reversed(batch))) == pytest.approx(score)


@settings(max_examples=50)
@given(st.lists(texts, min_size=1, max_size=3), st.one_of(st.integers(max_value=0), st.booleans(), st.floats()))
def test_diversity_rejects_bad_arguments(batch, n):
    error = ValueError if isinstance(n, int) and not isinstance(n, bool) else TypeError
    with pytest.raises(error, match="n must be"):
        functional.distinct_n(batch, n)
    with pytest.raises(error, match="n must be"):
        functional.repetition_rate(batch[0], n)
    with pytest.raises(TypeError, match="texts must be a list of strings"):
        functional.distinct_n(batch[0], 1)
    with pytest.raises(ValueError, match="texts needs at least 2 strings, got 1"):
        functional.self_bleu(batch[:1])


# -- model-backed metrics ---------------------------------------------------------------------


@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow])
@given(SHORT_PAIRS)
def test_semantic_similarity_in_range(pairs):
    predictions, refs = unzip(pairs)
    scores = functional.semantic_similarity(predictions, refs)
    assert len(scores) == len(pairs)
    for prediction, score in zip(predictions, scores, strict=True):
        assert_fraction(score, -1.0, 1.0)
        if not prediction.strip():
            assert score == 0.0
    copies = functional.semantic_similarity(refs, refs)
    assert copies == pytest.approx([1.0] * len(refs), abs=1e-5)


@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(references, st.one_of(st.just(""), texts)), min_size=1, max_size=3))
def test_perplexity_at_least_one_or_a_named_error(tiny_model, rows):
    predictions, contexts = unzip(rows)
    try:
        result = functional.perplexity(predictions, model=tiny_model, contexts=contexts)
    except ValueError as error:
        # Documented: a text with no token to score (one token and no context).
        assert "has no token to score" in str(error)
        return
    assert len(result) == len(rows)
    for value in result:
        assert isinstance(value, float) and math.isfinite(value) and value >= 1.0


def test_perplexity_rejects_bad_arguments(tiny_model):
    with pytest.raises(ValueError, match=r"texts\[1\] is empty or whitespace only"):
        functional.perplexity(["fine text", " "], model=tiny_model)
    with pytest.raises(ValueError, match="contexts and texts differ in length: 1 contexts, 2 texts"):
        functional.perplexity(["a b", "c d"], model=tiny_model, contexts=["x"])
    with pytest.raises(TypeError, match=r"texts\[0\] must be a string"):
        functional.perplexity([None], model=tiny_model)


# -- the evaluate modules ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def modules():
    return {name: load(name) for name in ("rouge", "bleu", "meteor", "diversity")}


def mean(values):
    return sum(values) / len(values)


@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow])
@given(PAIRS)
def test_modules_equal_the_functions(modules, pairs):
    predictions, refs = unzip(pairs)
    rouge = functional.rouge(predictions, refs)
    expected = {key: mean(values) for key, values in rouge.items()}
    assert modules["rouge"].compute(predictions=predictions, references=refs) == pytest.approx(expected)
    assert modules["bleu"].compute(predictions=predictions, references=refs) == functional.bleu(predictions, refs)
    meteor = functional.meteor(predictions, refs)
    expected = {key: mean(values) for key, values in meteor.items()}
    assert modules["meteor"].compute(predictions=predictions, references=refs) == pytest.approx(expected)
    if len(predictions) >= 2:
        result = modules["diversity"].compute(predictions=predictions)
        assert result == pytest.approx(
            {
                "distinct_1": functional.distinct_n(predictions, 1),
                "distinct_2": functional.distinct_n(predictions, 2),
                "self_bleu": functional.self_bleu(predictions),
                "repetition_rate": mean([functional.repetition_rate(p, 2) for p in predictions]),
            }
        )


@settings(max_examples=6, suppress_health_check=[HealthCheck.too_slow])
@given(PAIRS, st.sampled_from(["rouge", "bleu", "meteor"]))
def test_modules_name_bad_arguments(modules, pairs, name):
    predictions, refs = unzip(pairs)
    module = modules[name]
    with pytest.raises(ValueError, match=rf"Mismatch in the number of predictions \({len(pairs)}\)"):
        module.compute(predictions=predictions, references=refs + ["one more"])
    with pytest.raises(ValueError, match="references"):
        module.compute(predictions=predictions, references=[None] * len(refs))
    with pytest.raises(ValueError, match=r"references\[0\] is empty or whitespace only"):
        module.compute(predictions=predictions, references=[" "] + refs[1:])


def test_model_backed_modules_equal_the_functions(tiny_model):
    predictions, refs = ["a red car", "", "東京 👩‍💻 weather"], ["a red car", "x", "the weather in Tokyo"]
    similarity = load("semantic_similarity").compute(predictions=predictions, references=refs, aggregate=False)
    assert similarity["semantic_similarity"] == functional.semantic_similarity(predictions, refs)
    batch = ["hello world", " Paris.", "שלום עולם"]
    result = load("perplexity").compute(predictions=batch, model=tiny_model)
    expected = functional.perplexity(batch, model=tiny_model)
    assert result["perplexities"] == pytest.approx(expected)
    assert result["mean_perplexity"] == pytest.approx(mean(expected))
