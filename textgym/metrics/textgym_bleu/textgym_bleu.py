"""Corpus and sentence BLEU (sacrebleu), as an evaluate module."""

import datasets
import evaluate

from textgym.metrics import functional

_DESCRIPTION = """\
BLEU is the geometric mean of the modified n-gram precisions (n = 1..4) of the predictions
against their references, times a brevity penalty. This module runs `sacrebleu` with its
default settings (13a tokenisation, case-sensitive): the corpus score pools the counts of
all predictions; the sentence scores use sacrebleu's `effective_order` with `exp` smoothing.
Scores are on sacrebleu's 0-100 scale. Each prediction may have one reference or several.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated texts.
    references (list of str, or list of lists of str): per prediction, one reference or a
        non-empty list of them (non-blank).
Returns:
    bleu: corpus BLEU in [0, 100].
    sentence_bleu: one smoothed sentence BLEU per prediction, in [0, 100].
    precisions: the four corpus n-gram precisions (0-100).
    brevity_penalty, length_ratio, prediction_length, reference_length: corpus statistics.
Example:
    bleu = textgym.metrics.load("bleu")
    bleu.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])["bleu"]
    # 100.0
"""

_CITATION = """\
@inproceedings{papineni-etal-2002-bleu,
    title = "{B}leu: a Method for Automatic Evaluation of Machine Translation",
    author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing",
    booktitle = "Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics",
    year = "2002",
    pages = "311--318",
}
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    pages = "186--191",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TextgymBleu(evaluate.Metric):
    """BLEU computed by :func:`textgym.metrics.functional.bleu`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/P02-1040", "https://aclanthology.org/W18-6319"],
        )

    def _compute(self, predictions: list, references: list) -> dict:
        return functional.bleu(predictions, references)
