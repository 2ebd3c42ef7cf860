"""Summarization: read a source text, write its summary, scored by ROUGE against the reference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from textgym.checks import check_integer
from textgym.core import TaskPrompt, TurnResult, validate_text
from textgym.data import data_source, split_items
from textgym.envs.summarization_data import (  # noqa: F401 - re-exported: the task's data, by its old address
    SCHEMAS,
    SummaryExample,
    dataset_examples,
    detect_schema,
    docstring_pair,
    extract_stdlib_pairs,
    stdlib_examples,
)
from textgym.metrics.functional import rouge, text_list
from textgym.rewards import reward_function
from textgym.tasks import PromptSetTask
from textgym.text import truncate_words, whitespace_words
from textgym.text_env import TextEnv

DEFAULT_SYSTEM_PROMPT = "You are a careful assistant who writes short, faithful summaries."
DEFAULT_MAX_SOURCE_WORDS = 300

#: The instruction that follows the source in the user message, per data schema.
#: ``{name}`` is replaced by the qualified name of the documented Python object.
INSTRUCTIONS: dict[str, str] = {
    "stdlib": (
        "Above is the body of the docstring of the Python object `{name}`. "
        "Write the one-line summary that opens this docstring."
    ),
    "cnn_dailymail": "Summarize the news article above in three short sentences.",
    "xsum": "Summarize the article above in one sentence.",
    "samsum": "Summarize the conversation above in one or two sentences.",
}

# -- reward ---------------------------------------------------------------------------


def _word_count(text: str) -> int:
    return len(whitespace_words(text))


def _check_length_penalty(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"length_penalty must be a finite number >= 0, got {value!r}")
    return float(value)


def summary_reward_components(
    summaries: Sequence[str], references: Sequence[str], length_penalty: float = 0.0
) -> list[dict[str, float]]:
    """The parts of the Summarization reward of each summary; see :func:`summary_reward`.

    Returns:
        One dict per summary with ``"rougeL"`` (ROUGE-L F-measure, 0 for a summary with no
        words) and ``"length"`` (``-length_penalty * |words(summary) / words(reference) - 1|``).

    Raises:
        TypeError: An argument is not a list of strings (a non-string is named by its index).
        ValueError: The lists differ in length, a reference is blank (named by its index), or
            ``length_penalty`` is negative or not finite.
    """
    summaries = text_list(summaries, "summaries", min_len=0)
    references = text_list(references, "references", blank_ok=False, min_len=0)
    if len(summaries) != len(references):
        raise ValueError(f"got {len(summaries)} summaries but {len(references)} references")
    length_penalty = _check_length_penalty(length_penalty)
    scored = [i for i, summary in enumerate(summaries) if summary.split()]
    rouge_l = [0.0] * len(summaries)
    if scored:
        scores = rouge([summaries[i] for i in scored], [references[i] for i in scored])["rougeL"]
        for i, score in zip(scored, scores, strict=True):
            rouge_l[i] = float(score) if math.isfinite(score) else 0.0
    components = []
    for summary, reference, score in zip(summaries, references, rouge_l, strict=True):
        ratio = _word_count(summary) / max(_word_count(reference), 1)
        length = -float(length_penalty) * abs(ratio - 1.0) if length_penalty else 0.0
        components.append({"rougeL": score, "length": length})
    return components


def summary_reward(summaries: Sequence[str], references: Sequence[str], length_penalty: float = 0.0) -> list[float]:
    """The Summarization reward of each summary against its reference.

    ``reward = ROUGE-L F-measure(summary, reference)
    - length_penalty * |words(summary) / words(reference) - 1|``, words split on
    whitespace. ROUGE-L is the sentence-level F-measure of Google's ``rouge-score`` with
    Porter stemming, from :func:`textgym.metrics.functional.rouge`. A summary with no
    words scores ROUGE 0 (so reward 0 with the default ``length_penalty=0``).

    Args:
        summaries: The generated summaries.
        references: One reference summary per generated summary.
        length_penalty: Weight (>= 0) of the length term; 0 turns it off.

    Returns:
        One finite float per summary, in ``[0, 1]`` when ``length_penalty`` is 0.

    >>> summary_reward(["the cat sat on the mat", ""], ["the cat sat on the mat", "a dog"])
    [1.0, 0.0]
    >>> # ROUGE-L: P = 3/3, R = 3/6, F = 2/3; length: -0.5 * |3/6 - 1| = -0.25
    >>> [round(r, 4) for r in summary_reward(["the cat sat"], ["the cat sat on the mat"], length_penalty=0.5)]
    [0.4167]
    """
    return [sum(parts.values()) for parts in summary_reward_components(summaries, references, length_penalty)]


# -- task and env ---------------------------------------------------------------------


class SummarizationTask(PromptSetTask):
    """Text-level Summarization: see :class:`SummarizationEnv`."""

    def __init__(
        self,
        split: str = "train",
        dataset: str | None = None,
        schema: str | None = None,
        max_source_words: int = DEFAULT_MAX_SOURCE_WORDS,
        length_penalty: float = 0.0,
        instruction: str | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        dataset_config: str | None = None,
        dataset_split: str | None = None,
    ) -> None:
        super().__init__(split)
        self.instruction = None if instruction is None else validate_text(instruction, "instruction")
        self.system_prompt = validate_text(system_prompt, "system_prompt")
        self.max_source_words = check_integer(max_source_words, "max_source_words", minimum=1)
        self.length_penalty = _check_length_penalty(length_penalty)
        if dataset is None and schema is not None:
            raise ValueError(f"schema applies to a dataset file; got schema={schema!r} without a dataset")
        self.examples = split_items(
            self.split,
            data_source(dataset, dataset_config, dataset_split),
            stdlib_examples,
            lambda data: dataset_examples(data, schema),
            lambda example: example.example_id,
        )
        source = f"dataset {dataset or 'stdlib docstrings'!r}"
        self.index_prompts([e.example_id for e in self.examples], source, "examples")

    def start_episode(self, prompt_id: str) -> tuple[TaskPrompt, SummaryExample]:
        """Ask for the summary of the example ``prompt_id``; the state is the example."""
        example = self.examples[self._by_id[prompt_id]]
        source, truncated = truncate_words(example.source, self.max_source_words)
        instruction = self.instruction or INSTRUCTIONS[example.schema].format(name=example.example_id)
        # The instruction comes last, so the env's left-truncation of long contexts keeps it.
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": f"{source}\n\n{instruction}"},
        ]
        info = {"schema": example.schema, "source_words": _word_count(source), "source_truncated": truncated}
        return TaskPrompt(messages, example.example_id, info), example

    def reference_reply(self) -> str | None:
        """The reference summary of the running episode's source (None outside an episode)."""
        return None if self._episode is None else self._episode.summary

    def score_reply(self, state: SummaryExample, reply: str) -> tuple[TurnResult, None]:
        """Score ``reply`` against the reference summary; the episode ends."""
        parts = summary_reward_components([reply], [state.summary], self.length_penalty)[0]
        return TurnResult(sum(parts.values()), True, [], {"reward_components": parts}), None


class SummarizationEnv(TextEnv):
    """Summarization: read a source text, then write its summary.

    ## Description
    Each episode is one source text and one reply. The default data needs no download:
    the docstrings of this Python's standard library (about 1,250 pairs on Python 3.11),
    extracted with :mod:`ast` from every module, class and function: the docstring's
    opening paragraph (20 to 200 characters) is the reference summary, the rest of the
    docstring (at least 200 characters, doctest examples dropped) is the source. Data in
    the CNN/DailyMail, XSum or SAMSum schema can be given instead. The user message is
    the source (cut to ``max_source_words`` words) followed by the instruction, so when
    the env keeps only the last ``max_context_tokens`` tokens of a long context the
    instruction survives. The same task backs three ids, one per action granularity
    (see :class:`textgym.text_env.TextEnv`).

    ## Action Space
    * ``TextGym/Summarization-v0``: ``Discrete(V)``, the next token of the summary
      (V = 49,152 for the default SmolLM2 tokenizer). An end token ends the summary.
    * ``TextGym/SummarizationCandidate-v0``: ``Discrete(K)``, one of K summaries that the
      env's LM proposes (its greedy summary is candidate 0; ``action_masks()`` marks
      duplicates invalid).
    * ``TextGym/SummarizationUtterance-v0``: ``MultiDiscrete([V] * max_reply_tokens)``, the
      whole summary as token ids, read up to the first end token.

    ## Observation Space
    ``Dict(input_ids=Box(int32), attention_mask=Box(int8))`` of length
    ``max_context_tokens`` (512 for the registered ids) holding the chat-template
    context, left-padded; the candidate level adds ``candidate_ids`` and
    ``candidate_mask`` (K x ``max_reply_tokens``, flattened).

    ## Rewards
    Once, when the summary ends:
    ``reward = ROUGE-L F(summary, reference) - length_penalty * |w(summary) / w(reference) - 1|``
    where ROUGE-L F is the sentence-level ROUGE-L F-measure (longest common subsequence)
    of Google's ``rouge-score`` with Porter stemming, as computed by
    :func:`textgym.metrics.functional.rouge` (lower-cased ASCII letters and digits are
    the tokens), and ``w`` counts whitespace-separated words. With the default ``length_penalty=0`` rewards lie
    in [0, 1]; an empty summary scores 0 (and ``-length_penalty`` with a penalty, so it
    is never a shortcut). ``info["reward_components"]`` holds ``rougeL`` and
    ``length``; :func:`summary_reward` is the same function on lists of texts.

    ## Starting State
    An example drawn uniformly with ``self.np_random`` from the split, or the one named by
    ``reset(options={"prompt_id": ...})`` (the qualified name of the documented object
    for the default data, e.g. ``"json.dumps"``; the record's ``id`` for a dataset).
    Reset info gives ``schema``, ``source_words`` and ``source_truncated``; the reference
    summary never appears in messages or info.

    ## Episode End
    Terminated after the summary (a single turn). At token level, also truncated when
    the summary reaches ``max_reply_tokens`` without an end token (it is still scored).

    ## Arguments
    ``split`` (``"train"``, ``"validation"``, ``"test"``), ``dataset`` (``None`` for the
    standard-library docstrings, or a local JSON/JSONL or parquet file, a local directory
    of data files such as a hub dataset's snapshot, or a hub id), ``dataset_config`` (the
    dataset's config, e.g. ``"3.0.0"`` for CNN/DailyMail), ``dataset_split`` (the
    dataset's own split to read), ``schema`` (``"cnn_dailymail"``: ``article``/``highlights``;
    ``"xsum"``: ``document``/``summary``; ``"samsum"``: ``dialogue``/``summary``; ``None``
    detects it from the fields), ``max_source_words`` (default 300), ``length_penalty``
    (default 0.0), ``instruction`` (``None`` for the schema's default), ``system_prompt``,
    plus the :class:`textgym.text_env.TextEnv` arguments (``granularity``, ``model``,
    ``max_context_tokens``, ``max_reply_tokens``, ``num_candidates``,
    ``proposal_temperature``, ``render_mode``).

    A dataset's own split of the env's ``split`` name is read whole (CNN/DailyMail's
    ``validation`` for ``split="validation"``), or ``dataset_split`` when given; a source
    with a single split (the docstrings, a single file) is divided by a stable hash of
    the example id (:func:`textgym.data.split_of`). See :func:`textgym.data.open_split`.

    ## Version History
    * v0: Initial version.
    """

    task_class = SummarizationTask


#: The batch reward in TRL's shape (see :func:`textgym.rewards.reward_function`).
summarization_reward = reward_function("TextGym/Summarization-v0")
