"""Dialogue: write the next reply of a conversation, scored against the corpus reply."""

from __future__ import annotations

import functools
import importlib.util
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from textgym.checks import check_integer
from textgym.core import Message, TaskPrompt, TurnResult, validate_text
from textgym.data import (
    DatasetError,
    DatasetSplit,
    as_dataset_split,
    data_source,
    require_field,
    split_items,
)
from textgym.metrics.functional import text_list
from textgym.rewards import reward_function
from textgym.tasks import PromptSetTask
from textgym.text import bare_words
from textgym.text_env import TextEnv

DEFAULT_SYSTEM_PROMPT = "You are a friendly conversation partner. Reply in one short sentence."
_EXCHANGES_PER_SESSION = 3


def unigram_f1(reply: str, reference: str) -> float:
    """Word-overlap F1 between two texts' :func:`textgym.text.bare_words` (lower-cased, punctuation removed).

    >>> unigram_f1("The capital is Paris.", "Paris is the capital of France")
    0.8
    >>> unigram_f1("", "hello")
    0.0

    Raises:
        TypeError: ``reply`` or ``reference`` is not a string.
    """
    for name, text in (("reply", reply), ("reference", reference)):
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a str, got {type(text).__name__}: {text!r:.80}")
    reply_words, reference_words = bare_words(reply), bare_words(reference)
    overlap = sum((Counter(reply_words) & Counter(reference_words)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(reply_words), overlap / len(reference_words)
    return 2 * precision * recall / (precision + recall)


def reply_score(reply: str, references: list[str]) -> float:
    """The Dialogue reward of one reply: the best :func:`unigram_f1` over the turn's references.

    Raises:
        TypeError: ``reply`` is not a string or ``references`` is not a list of strings.
        ValueError: ``references`` is empty.
    """
    return max(unigram_f1(reply, reference) for reference in text_list(references, "references"))


@dataclass(frozen=True)
class Turn:
    """One user message and every reply the corpus accepts for it."""

    user: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class Conversation:
    """A stable id and its turns."""

    conversation_id: str
    turns: tuple[Turn, ...]


@functools.lru_cache(maxsize=1)
def chatterbot_conversations() -> tuple[Conversation, ...]:
    """The English ChatterBot corpus (PyPI ``chatterbot-corpus``) as multi-turn conversations.

    Within each topic file, questions asked with several answers become one turn whose
    references are all the answers; consecutive single exchanges are grouped into
    sessions of three turns; the corpus' own longer conversations are kept whole.
    """
    import yaml

    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the default Dialogue data needs the PyPI package 'chatterbot-corpus'")
    english = Path(spec.submodule_search_locations[0]) / "data" / "english"
    conversations: list[Conversation] = []
    for path in sorted(english.glob("*.yml")):
        topic = path.stem
        exchanges: dict[str, list[str]] = {}
        for index, lines in enumerate(yaml.safe_load(path.read_text(encoding="utf-8"))["conversations"]):
            # The corpus has a few malformed entries (a bare string, blank lines): skip them.
            if not isinstance(lines, list) or not all(isinstance(line, str) and line.strip() for line in lines):
                continue
            lines = [line.strip() for line in lines]
            if len(lines) == 2:
                exchanges.setdefault(lines[0], []).append(lines[1])
            elif len(lines) > 2:
                turns = tuple(Turn(lines[i], (lines[i + 1],)) for i in range(0, len(lines) - 1, 2))
                conversations.append(Conversation(f"{topic}-long{index:03d}", turns))
        singles = [Turn(question, tuple(answers)) for question, answers in exchanges.items()]
        for start in range(0, len(singles), _EXCHANGES_PER_SESSION):
            conversations.append(
                Conversation(f"{topic}-{start // _EXCHANGES_PER_SESSION:03d}", tuple(singles[start : start + 3]))
            )
    return tuple(conversations)


@functools.lru_cache(maxsize=16)
def _dailydialog_conversations(data: DatasetSplit) -> tuple[Conversation, ...]:
    source = data.dataset
    conversations = []
    for index, record in enumerate(data.records()):
        utterances = require_field(record, ("dialog", "utterances", "turns"), source, index)
        if not isinstance(utterances, list) or len(utterances) < 2:
            raise DatasetError(f"dataset {source!r} record {index}: 'dialog' must be a list of >= 2 utterances")
        lines = [
            validate_text(utterance, f"dataset {source!r} record {index} utterance {i}").strip()
            for i, utterance in enumerate(utterances)
        ]
        turns = tuple(Turn(lines[i], (lines[i + 1],)) for i in range(0, len(lines) - 1, 2))
        conversations.append(Conversation(str(record.get("id", f"{index:06d}")), turns))
    return tuple(conversations)


def dailydialog_conversations(source: str | DatasetSplit) -> tuple[Conversation, ...]:
    """Read conversations in DailyDialog's schema: records with ``dialog``, a list of utterances.

    Even utterances are the user's, odd ones the replies the agent is scored against;
    a record may carry an ``id`` (else its position is used). ``utterances`` and
    ``turns`` are accepted as other names of ``dialog``. Read and checked once per
    process per source.

    Args:
        source: A split of a data source (see :func:`textgym.data.open_split`), or a path
            or hub id for its ``"train"`` (or only) split.
    """
    return _dailydialog_conversations(as_dataset_split(source))


class DialogueTask(PromptSetTask):
    """Text-level Dialogue: see :class:`DialogueEnv`."""

    def __init__(
        self,
        split: str = "train",
        dataset: str | None = None,
        num_turns: int = 3,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        dataset_config: str | None = None,
        dataset_split: str | None = None,
    ) -> None:
        super().__init__(split)
        self.num_turns = check_integer(num_turns, "num_turns", minimum=1)
        self.system_prompt = validate_text(system_prompt, "system_prompt")
        self.conversations = split_items(
            self.split,
            data_source(dataset, dataset_config, dataset_split),
            chatterbot_conversations,
            dailydialog_conversations,
            lambda conversation: conversation.conversation_id,
        )
        source = f"dataset {dataset or 'chatterbot-corpus'!r}"
        self.index_prompts([c.conversation_id for c in self.conversations], source, "conversations")

    def start_episode(self, prompt_id: str) -> tuple[TaskPrompt, tuple[tuple[Turn, ...], int]]:
        """The conversation's first user turn; the state is its turns and the index of the turn to answer."""
        turns = self.conversations[self._by_id[prompt_id]].turns[: self.num_turns]
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": turns[0].user}]
        return TaskPrompt(messages, prompt_id, {"num_turns": len(turns)}), (turns, 0)

    def score_reply(
        self, state: tuple[tuple[Turn, ...], int], reply: str
    ) -> tuple[TurnResult, tuple[tuple[Turn, ...], int]]:
        """Score ``reply`` against this turn's references; the next user turn follows, if any."""
        turns, turn = state
        score = reply_score(reply, list(turns[turn].references))
        turn += 1
        over = turn >= len(turns)
        next_messages: list[Message] = [] if over else [{"role": "user", "content": turns[turn].user}]
        return TurnResult(score, over, next_messages, {"reward_components": {"unigram_f1": score}}), (turns, turn)


class DialogueEnv(TextEnv):
    """Dialogue: write the assistant's next reply in an English conversation.

    ## Description
    Each episode is a conversation of up to ``num_turns`` user messages from the
    ChatterBot English corpus (PyPI ``chatterbot-corpus``, 21 topics). After a short
    system prompt, the user speaks; the agent writes a reply; the corpus' next user
    message follows; and so on. Replies are scored against the corpus' replies. The
    same task backs three ids, one per action granularity (see :class:`textgym.text_env.TextEnv`).

    ## Action Space
    * ``TextGym/Dialogue-v0``: ``Discrete(V)``, the next token of the reply (V = 49,152
      for the default SmolLM2 tokenizer). An end token ends the reply.
    * ``TextGym/DialogueCandidate-v0``: ``Discrete(K)``, one of K replies that the env's
      LM proposes each turn (the LM's greedy reply is candidate 0; ``action_masks()``
      marks duplicates invalid).
    * ``TextGym/DialogueUtterance-v0``: ``MultiDiscrete([V] * max_reply_tokens)``, the whole
      reply as token ids, read up to the first end token.

    ## Observation Space
    ``Dict(input_ids=Box(int32), attention_mask=Box(int8))`` of length
    ``max_context_tokens`` holding the chat-template context, left-padded; the candidate
    level adds ``candidate_ids`` and ``candidate_mask`` (K x ``max_reply_tokens``, flattened).

    ## Rewards
    At the end of each reply, at every granularity:
    ``reward = max over references r of F1(reply, r)``, with
    ``F1 = 2 P R / (P + R)``, ``P = overlap / |reply words|``, ``R = overlap / |r words|``,
    ``overlap`` the multiset intersection of lower-cased words with punctuation removed.
    Rewards lie in [0, 1]; every other step gives 0. ``info["reward_components"]`` holds it.

    ## Starting State
    A conversation drawn uniformly with ``self.np_random`` from the split, or the one named
    by ``reset(options={"prompt_id": ...})``.

    ## Episode End
    Terminated after the reply to the last user message. At token level, truncated when a
    reply reaches ``max_reply_tokens`` without an end token (the reply is still scored; a
    cut last reply is both terminated and truncated, see :class:`textgym.text_env.TextEnv`).

    ## Arguments
    ``split`` (``"train"``, ``"validation"``, ``"test"``), ``dataset`` (``None`` for
    ChatterBot, or data in DailyDialog's schema, records with ``dialog``, a list of
    utterances: a local JSON/JSONL or parquet file, a local directory of data files, or a
    hub id), ``dataset_config`` (the dataset's config, e.g. a hub dataset's version),
    ``dataset_split`` (the dataset's own split to read), ``num_turns`` (default 3),
    ``system_prompt``, plus the :class:`textgym.text_env.TextEnv` arguments
    (``granularity``, ``model``, ``max_context_tokens``, ``max_reply_tokens``,
    ``num_candidates``, ``proposal_temperature``, ``render_mode``).

    A dataset's own split of the env's ``split`` name is read whole (or ``dataset_split``
    when given); a source with a single split (ChatterBot, a single file) is divided by
    a stable hash of the conversation id (:func:`textgym.data.split_of`). See
    :func:`textgym.data.open_split`.

    ## Version History
    * v0: Initial version.
    """

    task_class = DialogueTask


#: The batch reward in TRL's shape (see :func:`textgym.rewards.reward_function`).
dialogue_reward = reward_function("TextGym/Dialogue-v0")
