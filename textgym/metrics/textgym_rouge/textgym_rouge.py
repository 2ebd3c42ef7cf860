"""ROUGE-1, ROUGE-2 and ROUGE-L F-measures with Porter stemming (rouge-score), as an evaluate module."""

import datasets
import evaluate

from textgym.metrics import functional

_DESCRIPTION = """\
ROUGE counts the n-grams (ROUGE-1, ROUGE-2) and the longest common subsequence (ROUGE-L)
that a prediction shares with its reference, and reports their F-measure. This module runs
Google's `rouge-score` package with Porter stemming: text is lower-cased, characters other
than ASCII letters and digits become spaces, tokens longer than three characters are stemmed.
ROUGE-L is the sentence-level variant (not rougeLsum).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated texts; an empty one scores 0.
    references (list of str): one non-blank reference per prediction.
    aggregate (bool, default True): return the mean over pairs; False returns one score per pair.
Returns:
    rouge1, rouge2, rougeL: F-measures in [0, 1] (floats, or lists of floats if aggregate=False).
Example:
    rouge = textgym.metrics.load("rouge")
    rouge.compute(predictions=["the cat sat"], references=["the cat sat down"])["rouge1"]
    # 0.857...: 3 shared unigrams, precision 3/3, recall 3/4
"""

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    publisher = "Association for Computational Linguistics",
    pages = "74--81",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TextgymRouge(evaluate.Metric):
    """ROUGE F-measures computed by :func:`textgym.metrics.functional.rouge`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://aclanthology.org/W04-1013"],
        )

    def _compute(self, predictions: list, references: list, aggregate: bool = True) -> dict:
        scores = functional.rouge(predictions, references)
        if not aggregate:
            return scores
        return {key: sum(values) / len(values) for key, values in scores.items()}
