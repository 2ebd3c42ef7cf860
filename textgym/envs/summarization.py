"""Summarization: read a source text, write its summary, scored by ROUGE against the reference."""

from __future__ import annotations

import ast
import functools
import json
import math
import os
import platform
import re
import sys
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textgym.core import TaskPrompt, TextTask, TurnResult, validate_text
from textgym.data import DatasetError, check_split, load_records, require_field, split_of
from textgym.metrics.functional import rouge, text_list
from textgym.rewards import reward_function
from textgym.text_env import TextEnv

DEFAULT_SYSTEM_PROMPT = "You are a careful assistant who writes short, faithful summaries."
DEFAULT_MAX_SOURCE_WORDS = 300

#: Dataset schemas: name -> (source field, summary field).
SCHEMAS: dict[str, tuple[str, str]] = {
    "cnn_dailymail": ("article", "highlights"),
    "xsum": ("document", "summary"),
    "samsum": ("dialogue", "summary"),
}

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

# Bounds of the standard-library pairs (characters).
_SUMMARY_MIN_CHARS = 20
_SUMMARY_MAX_CHARS = 200
_SOURCE_MIN_CHARS = 200
# Directories of the standard library that hold tests, tools or third-party code.
_STDLIB_SKIP_DIRS = frozenset(
    {
        "__pycache__",
        "dist-packages",
        "ensurepip",
        "idlelib",
        "lib-dynload",
        "lib2to3",
        "pydoc_data",
        "site-packages",
        "test",
        "tests",
        "turtledemo",
    }
)
# Bump when the extraction rules change, so stale caches are not read.
_EXTRACTION_VERSION = 1
_DOCTEST_LINE = re.compile(r"^\s*(>>>|\.\.\.)(\s|$)")
_SIGNATURE = re.compile(r"^[A-Za-z_][\w.]*\(.*\)\s*(->.*)?$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class SummaryExample:
    """One source text and its reference summary.

    Attributes:
        example_id: A stable id (the split is a hash of it).
        source: The text to summarize.
        summary: The reference summary (never shown to the agent).
        schema: The data schema it came from: ``"stdlib"`` or a key of :data:`SCHEMAS`.
    """

    example_id: str
    source: str
    summary: str
    schema: str


# -- reward ---------------------------------------------------------------------------


def _word_count(text: str) -> int:
    return len(text.split())


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
    if not isinstance(length_penalty, (int, float)) or not math.isfinite(length_penalty) or length_penalty < 0:
        raise ValueError(f"length_penalty must be a finite number >= 0, got {length_penalty!r}")
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


# -- data -----------------------------------------------------------------------------


def _strip_doctests(text: str) -> str:
    """Drop doctest lines (``>>>`` and ``...`` prompts) and the output lines that follow them."""
    kept: list[str] = []
    in_example = False
    for line in text.split("\n"):
        if _DOCTEST_LINE.match(line):
            in_example = True
            continue
        if in_example and line.strip():
            continue  # expected output of the example
        in_example = False
        kept.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


def docstring_pair(docstring: str) -> tuple[str, str] | None:
    r"""Split a cleaned docstring into ``(summary, source)``, or ``None`` if it does not qualify.

    The summary is the opening paragraph on one line (20 to 200 characters, not a call
    signature); the source is the rest with doctest examples dropped (>= 200 characters).

    >>> body = "Longer explanation. " * 12
    >>> docstring_pair("Return the answer to everything.\n\n" + body)[0]
    'Return the answer to everything.'
    >>> docstring_pair("Too short.\n\n" + body) is None
    True
    """
    parts = _PARAGRAPH_BREAK.split(docstring.strip(), maxsplit=1)
    if len(parts) != 2:
        return None
    summary = " ".join(parts[0].split())
    source = _strip_doctests(parts[1])
    if not _SUMMARY_MIN_CHARS <= len(summary) <= _SUMMARY_MAX_CHARS or len(source) < _SOURCE_MIN_CHARS:
        return None
    if summary.startswith(">>>") or _SIGNATURE.match(summary):
        return None
    try:
        validate_text(summary, "summary")
        validate_text(source, "source")
    except ValueError:
        return None
    return summary, source


def _stdlib_files(root: Path) -> list[Path]:
    files = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(
            d for d in subdirectories if d not in _STDLIB_SKIP_DIRS and "-" not in d and not d.startswith(".")
        )
        files += [Path(directory, name).relative_to(root) for name in sorted(names) if name.endswith(".py")]
    return files


def extract_stdlib_pairs(root: str | os.PathLike | None = None) -> list[tuple[str, str, str]]:
    """Extract ``(qualified name, summary, source)`` from the docstrings of a standard library.

    Every module, class and function (nested in classes or functions too, not in ``if``
    blocks) of the ``.py`` files under ``root`` is considered, in sorted file order;
    :func:`docstring_pair` decides which docstrings qualify. Test suites, IDLE,
    ``site-packages`` and other non-library directories are skipped. The first object
    with a given qualified name or a given source wins (a docstring copied onto several
    objects would otherwise sit in several splits).

    Args:
        root: The standard library directory; default ``sysconfig.get_paths()["stdlib"]``.
    """
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    pairs: dict[str, tuple[str, str]] = {}
    sources: set[str] = set()
    for relative in _stdlib_files(root):
        try:
            tree = ast.parse((root / relative).read_bytes(), filename=str(relative))
        except (SyntaxError, ValueError, OSError):
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if not parts:
            continue
        stack: list[tuple[ast.AST, str]] = [(tree, ".".join(parts))]
        while stack:
            node, name = stack.pop()
            docstring = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
            pair = docstring_pair(docstring) if docstring else None
            if pair is not None and name not in pairs and pair[1] not in sources:
                pairs[name] = pair
                sources.add(pair[1])
            children = [
                child
                for child in ast.iter_child_nodes(node)
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            ]
            stack += [(child, f"{name}.{child.name}") for child in reversed(children)]
    return [(name, summary, source) for name, (summary, source) in pairs.items()]


def _stdlib_cache_path() -> Path:
    from textgym.models import textgym_home

    version = f"{sys.implementation.name}-{platform.python_version()}"
    return textgym_home() / "data" / f"summarization-stdlib-{version}-v{_EXTRACTION_VERSION}.json"


def _read_cache(path: Path) -> list[tuple[str, str, str]] | None:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["pairs"]
        if rows and all(
            isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row) for row in rows
        ):
            return [tuple(row) for row in rows]  # type: ignore[misc]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_cache(path: Path, pairs: list[tuple[str, str, str]]) -> None:
    """Write atomically; a cache that cannot be written is only a slower next start."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump({"python": sys.version, "pairs": [list(pair) for pair in pairs]}, file)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError:
        pass


@functools.lru_cache(maxsize=1)
def stdlib_examples() -> tuple[SummaryExample, ...]:
    """The default Summarization data: docstring pairs of this Python's standard library.

    Extraction parses a few hundred files (seconds), so its result is cached per process
    and in a JSON file under :func:`textgym.models.textgym_home` keyed by the Python
    version. The data, and so the ids, depend on the Python version.
    """
    path = _stdlib_cache_path()
    pairs = _read_cache(path)
    if pairs is None:
        pairs = extract_stdlib_pairs()
        if not pairs:
            raise DatasetError(f"found no docstrings to summarize under {sysconfig.get_paths()['stdlib']!r}")
        _write_cache(path, pairs)
    return tuple(SummaryExample(name, source, summary, "stdlib") for name, summary, source in pairs)


def detect_schema(record: Mapping[str, Any]) -> str | None:
    """The first key of :data:`SCHEMAS` whose source and summary fields ``record`` has, else ``None``.

    >>> detect_schema({"id": "1", "dialogue": "A: hi", "summary": "A greets."})
    'samsum'
    """
    for schema, fields in SCHEMAS.items():
        if all(name in record for name in fields):
            return schema
    return None


def dataset_examples(source: str, schema: str | None = None) -> tuple[SummaryExample, ...]:
    """Read summarization records in the CNN/DailyMail, XSum or SAMSum schema.

    Args:
        source: A local ``.json`` / ``.jsonl`` file or a hub dataset id (its train split).
        schema: A key of :data:`SCHEMAS`, or ``None`` to detect it from the first record's
            fields (``article``/``highlights``, ``document``/``summary``,
            ``dialogue``/``summary``). Records may carry an ``id`` (else their position).

    Raises:
        DatasetError: The source is missing, empty or malformed, no schema fits, or a
            record lacks a field, has an empty or non-text field, or repeats an id.
    """
    if schema is not None and schema not in SCHEMAS:
        raise ValueError(f"schema must be None or one of {tuple(SCHEMAS)}, got {schema!r}")
    records = load_records(source)
    if schema is None:
        schema = detect_schema(records[0])
        if schema is None:
            expected = ", ".join(f"{a!r}/{b!r} ({name})" for name, (a, b) in SCHEMAS.items())
            raise DatasetError(
                f"dataset {source!r} record 0 has fields {sorted(records[0])}; expected one of {expected}, "
                "or pass schema="
            )
    source_field, summary_field = SCHEMAS[schema]
    examples, seen = [], set()
    for index, record in enumerate(records):
        texts = []
        for field in (source_field, summary_field):
            value = require_field(record, (field,), source, index)
            try:
                texts.append(validate_text(value, f"dataset {source!r} record {index} field {field!r}").strip())
            except (TypeError, ValueError) as error:
                raise DatasetError(str(error)) from error
        example_id = str(record.get("id", f"{index:06d}"))
        if example_id in seen:
            raise DatasetError(f"dataset {source!r} record {index} repeats id {example_id!r}")
        seen.add(example_id)
        examples.append(SummaryExample(example_id, texts[0], texts[1], schema))
    return tuple(examples)


def truncate_words(text: str, max_words: int) -> tuple[str, bool]:
    r"""Keep the first ``max_words`` whitespace-separated words of ``text`` (layout kept).

    >>> truncate_words("one two\nthree four", 3)
    ('one two\nthree', True)
    """
    words = list(re.finditer(r"\S+", text))
    if len(words) <= max_words:
        return text, False
    return text[: words[max_words - 1].end()], True


# -- task and env ---------------------------------------------------------------------


class SummarizationTask(TextTask):
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
    ) -> None:
        self.split = check_split(split)
        if isinstance(max_source_words, bool) or not isinstance(max_source_words, int) or max_source_words < 1:
            raise ValueError(f"max_source_words must be an integer >= 1, got {max_source_words!r}")
        if (
            isinstance(length_penalty, bool)
            or not isinstance(length_penalty, (int, float))
            or not math.isfinite(length_penalty)
            or length_penalty < 0
        ):
            raise ValueError(f"length_penalty must be a finite number >= 0, got {length_penalty!r}")
        if dataset is None and schema is not None:
            raise ValueError(f"schema applies to a dataset file; got schema={schema!r} without a dataset")
        self.max_source_words = max_source_words
        self.length_penalty = float(length_penalty)
        self.instruction = None if instruction is None else validate_text(instruction, "instruction")
        self.system_prompt = validate_text(system_prompt, "system_prompt")
        everything = stdlib_examples() if dataset is None else dataset_examples(dataset, schema)
        self.examples = [e for e in everything if split_of(e.example_id) == split]
        if not self.examples:
            raise DatasetError(f"dataset {dataset or 'stdlib docstrings'!r} has no examples in split {split!r}")
        self._by_id = {e.example_id: i for i, e in enumerate(self.examples)}
        self._example: SummaryExample | None = None

    def prompt_ids(self) -> list[str]:
        """Every prompt id of this split, in the data's order."""
        return [e.example_id for e in self.examples]

    def reset(self, rng: np.random.Generator, options: Mapping[str, Any] | None = None) -> TaskPrompt:
        """Draw an example (or take ``options["prompt_id"]``) and ask for its summary."""
        options = dict(options or {})
        if "prompt_id" in options:
            prompt_id = options.pop("prompt_id")
            if not isinstance(prompt_id, str) or prompt_id not in self._by_id:
                raise ValueError(f"unknown prompt_id {prompt_id!r} in Summarization split {self.split!r}")
            index = self._by_id[prompt_id]
        else:
            index = int(rng.integers(len(self.examples)))
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; Summarization accepts 'prompt_id'")
        example = self._example = self.examples[index]
        source, truncated = truncate_words(example.source, self.max_source_words)
        instruction = self.instruction or INSTRUCTIONS[example.schema].format(name=example.example_id)
        # The instruction comes last, so the env's left-truncation of long contexts keeps it.
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": f"{source}\n\n{instruction}"},
        ]
        info = {"schema": example.schema, "source_words": _word_count(source), "source_truncated": truncated}
        return TaskPrompt(messages, example.example_id, info)

    def step(self, reply: str) -> TurnResult:
        """Score ``reply`` against the reference summary; the episode ends."""
        if self._example is None:
            raise RuntimeError("SummarizationTask.step() called before reset()")
        parts = summary_reward_components([reply], [self._example.summary], self.length_penalty)[0]
        return TurnResult(sum(parts.values()), True, [], {"reward_components": parts})


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
    ``split`` (``"train"``, ``"validation"``, ``"test"``; a stable hash of the example id
    decides), ``dataset`` (``None`` for the standard-library docstrings, or a local
    JSON/JSONL file or hub id), ``schema`` (``"cnn_dailymail"``: ``article``/``highlights``;
    ``"xsum"``: ``document``/``summary``; ``"samsum"``: ``dialogue``/``summary``; ``None``
    detects it from the fields), ``max_source_words`` (default 300), ``length_penalty``
    (default 0.0), ``instruction`` (``None`` for the schema's default), ``system_prompt``,
    plus the :class:`textgym.text_env.TextEnv` arguments (``granularity``, ``model``,
    ``max_context_tokens``, ``max_reply_tokens``, ``num_candidates``,
    ``proposal_temperature``, ``render_mode``).

    ## Version History
    * v0: Initial version.
    """

    task_class = SummarizationTask


#: The batch reward in TRL's shape (see :func:`textgym.rewards.reward_function`).
summarization_reward = reward_function("TextGym/Summarization-v0")
