"""METEOR (nltk), with WordNet synonyms only where WordNet is installed, as an evaluate module."""

import datasets
import evaluate

from textgym.metrics import functional

_DESCRIPTION = """\
METEOR aligns the words of a prediction with those of its reference (exact matches, then
Porter-stem matches, then WordNet synonyms), and combines unigram precision and recall
(recall weighted higher) with a penalty for fragmented alignments. This module runs nltk's
implementation with its default parameters on lower-cased regex word tokens, taking the
best of several references.

The result key names the variant that ran: `meteor` when nltk could load its WordNet data,
`meteor_exact_stem` (exact and stem matches only, no synonyms) when WordNet is not
installed. Nothing is downloaded.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated texts; an empty one scores 0.
    references (list of str, or list of lists of str): per prediction, one reference or a
        non-empty list of them (non-blank).
    aggregate (bool, default True): return the mean over pairs; False returns one score per pair.
Returns:
    meteor or meteor_exact_stem: the score in [0, 1) (a float, or a list if aggregate=False).
Example:
    meteor = textgym.metrics.load("meteor")
    meteor.compute(predictions=["the cat sat"], references=["the cat sat"])
    # {"meteor_exact_stem": 0.981...} without WordNet data: 3 matches in 1 chunk, 1 - 0.5 * (1/3) ** 3
"""

_CITATION = """\
@inproceedings{banerjee-lavie-2005-meteor,
    title = "{METEOR}: An Automatic Metric for {MT} Evaluation with Improved Correlation with Human Judgments",
    author = "Banerjee, Satanjeev and Lavie, Alon",
    booktitle = "Proceedings of the {ACL} Workshop on Intrinsic and Extrinsic Evaluation Measures for Machine
        Translation and/or Summarization",
    year = "2005",
    pages = "65--72",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TextgymMeteor(evaluate.Metric):
    """METEOR computed by :func:`textgym.metrics.functional.meteor`."""

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
            codebase_urls=["https://www.nltk.org/api/nltk.translate.meteor_score.html"],
            reference_urls=["https://aclanthology.org/W05-0909"],
        )

    def _compute(self, predictions: list, references: list, aggregate: bool = True) -> dict:
        scores = functional.meteor(predictions, references)
        if not aggregate:
            return scores
        return {key: sum(values) / len(values) for key, values in scores.items()}
