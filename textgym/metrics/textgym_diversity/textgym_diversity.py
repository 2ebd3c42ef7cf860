"""Diversity of a set of generations (distinct-n, self-BLEU, repetition), as an evaluate module."""

import datasets
import evaluate

from textgym.metrics import functional

_DESCRIPTION = """\
Diversity measures of a set of predictions, with no references:

* distinct-1 and distinct-2: unique unigrams (bigrams) over all unigrams (bigrams), pooled
  over the predictions (lower-cased regex word tokens; 0 when there are none).
* self-BLEU: the mean sacrebleu sentence BLEU (0-100, `effective_order`, `exp` smoothing) of
  each prediction against all the others; higher means less diverse. Needs two predictions.
* repetition_rate: the mean, over predictions, of the fraction of a prediction's bigrams that
  repeat an earlier bigram of the same prediction (degenerate loops score near 1).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated texts, at least two.
Returns:
    distinct_1, distinct_2: fractions in [0, 1].
    self_bleu: in [0, 100].
    repetition_rate: in [0, 1).
Example:
    diversity = textgym.metrics.load("diversity")
    diversity.compute(predictions=["a b a", "b c"])
    # distinct_1 = 3 unique / 5 unigrams = 0.6; distinct_2 = {ab, ba, bc} / 3 = 1.0
"""

_CITATION = """\
@inproceedings{li-etal-2016-diversity,
    title = "A Diversity-Promoting Objective Function for Neural Conversation Models",
    author = "Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill",
    booktitle = "Proceedings of the 2016 Conference of the North {A}merican Chapter of the Association for
        Computational Linguistics: Human Language Technologies",
    year = "2016",
    pages = "110--119",
}
@inproceedings{zhu-etal-2018-texygen,
    title = "Texygen: A Benchmarking Platform for Text Generation Models",
    author = "Zhu, Yaoming and Lu, Sidi and Zheng, Lei and Guo, Jiaxian and Zhang, Weinan and Wang, Jun and Yu, Yong",
    booktitle = "The 41st International ACM SIGIR Conference on Research and Development in Information Retrieval",
    year = "2018",
    pages = "1097--1100",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TextgymDiversity(evaluate.Metric):
    """Distinct-n, self-BLEU and repetition rate from :mod:`textgym.metrics.functional`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
            reference_urls=["https://aclanthology.org/N16-1014", "https://arxiv.org/abs/1802.01886"],
        )

    def _compute(self, predictions: list) -> dict:
        return {
            "distinct_1": functional.distinct_n(predictions, 1),
            "distinct_2": functional.distinct_n(predictions, 2),
            "self_bleu": functional.self_bleu(predictions),
            "repetition_rate": sum(functional.repetition_rate(text, 2) for text in predictions) / len(predictions),
        }
