"""Perplexity of texts under a causal language model loaded by textgym, as an evaluate module."""

import datasets
import evaluate

from textgym.metrics import functional

_DESCRIPTION = """\
Perplexity is the exponential of the mean negative log-likelihood of a text's tokens under a
causal language model; lower means the model finds the text more likely. The model is loaded
by name through textgym (`"default"` is SmolLM2-135M-Instruct, shipped offline; `"tiny"` is a
random 2-layer test model; a local model directory also works). Optional contexts condition
the text without being scored. Without a context (and without a BOS token added by the
tokenizer) the first token of a text is not scored.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the texts to score, not blank.
    model (str, default "default"): a model name for textgym.models.load_shared_causal_lm.
    contexts (list of str, optional): one conditioning text per prediction ("" for none).
    batch_size (int, default 8): texts per forward pass.
Returns:
    perplexities: one perplexity (>= 1) per prediction.
    mean_perplexity: their mean.
Example:
    perplexity = textgym.metrics.load("perplexity")
    perplexity.compute(predictions=[" Paris."], contexts=["The capital of France is"], model="default")
"""

_CITATION = """\
@article{jelinek-etal-1977-perplexity,
    title = "Perplexity---a measure of the difficulty of speech recognition tasks",
    author = "Jelinek, Fred and Mercer, Robert L. and Bahl, Lalit R. and Baker, James K.",
    journal = "The Journal of the Acoustical Society of America",
    volume = "62",
    number = "S1",
    year = "1977",
    pages = "S63--S63",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TextgymPerplexity(evaluate.Metric):
    """Perplexity computed by :func:`textgym.metrics.functional.perplexity`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(
        self, predictions: list, model: str = "default", contexts: list | None = None, batch_size: int = 8
    ) -> dict:
        perplexities = functional.perplexity(predictions, model=model, contexts=contexts, batch_size=batch_size)
        return {"perplexities": perplexities, "mean_perplexity": sum(perplexities) / len(perplexities)}
