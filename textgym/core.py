"""The text-level task contract and the one Gymnasium env that views it at three granularities.

A task is written once, at the text level (:class:`TextTask`): ``reset`` gives the
conversation so far as chat messages, ``step`` takes the agent's reply text and returns
the reward, whether the task is over and a JSON-serialisable info. It knows nothing of
tokens, spaces, torch or SB3, so an RL engine can drive it with text alone.

:class:`TextEnv` turns a task into a Gymnasium env whose actions live in a language
model's space, at one of three granularities:

* ``"token"``: ``Discrete(V)``, one token of the LM vocabulary per step; an end token
  (or the reply token budget) ends the reply.
* ``"candidate"``: ``Discrete(K)``, the env's LM proposes K replies per turn (its greedy
  reply first) and the action picks one.
* ``"utterance"``: ``MultiDiscrete([V] * max_reply_tokens)``, a whole reply per step as
  token ids, read up to the first end token.
"""

from __future__ import annotations

import math
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from textgym.checks import check_integer

Message = dict[str, str]
GRANULARITIES = ("token", "candidate", "utterance")
ROLES = ("system", "user", "assistant")


def validate_text(text: Any, what: str) -> str:
    """Return ``text`` if it is usable model input, else raise naming ``what`` and the value.

    Emoji ZWJ sequences, right-to-left scripts and other valid Unicode pass unchanged.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: ``text`` is empty, whitespace only, holds a NUL or another control
            character, or a lone surrogate.

    >>> validate_text("Hi 👩‍💻 שלום", "message")
    'Hi 👩‍💻 שלום'
    >>> validate_text("  ", "message")
    Traceback (most recent call last):
    ...
    ValueError: message is empty or whitespace only: '  '
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}: {text!r:.80}")
    if not text.strip():
        raise ValueError(f"{what} is empty or whitespace only: {text!r}")
    for index, char in enumerate(text):
        category = unicodedata.category(char)
        if category == "Cs":
            raise ValueError(f"{what} holds a lone surrogate {char!r} at index {index}: {text!r:.80}")
        if category == "Cc" and char not in "\n\t\r":
            raise ValueError(f"{what} holds control character {char!r} at index {index}: {text!r:.80}")
    return text


def validate_messages(messages: Any, what: str = "messages") -> list[Message]:
    """Check a chat conversation: a non-empty list of ``{"role", "content"}`` dicts with valid text."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{what} must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r:.80}")
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            raise ValueError(f"{what}[{index}] must be a dict with keys 'role' and 'content', got {message!r:.80}")
        if message["role"] not in ROLES:
            raise ValueError(f"{what}[{index}] has unknown role {message['role']!r}; expected one of {ROLES}")
        checked.append({"role": message["role"], "content": validate_text(message["content"], f"{what}[{index}]")})
    return checked


@dataclass
class TaskPrompt:
    """What a task's ``reset`` gives: the conversation the agent replies to.

    Attributes:
        messages: Chat messages, oldest first; the agent writes the next assistant turn.
        prompt_id: A stable id of this prompt within the task and split.
        info: JSON-serialisable extras (never the reference answer).
    """

    messages: list[Message]
    prompt_id: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TurnResult:
    """What a task's ``step`` returns for one agent reply.

    Attributes:
        reward: A finite float.
        terminated: True when the task is over (e.g. last turn answered).
        next_messages: Messages that follow the reply (e.g. the next user turn).
        info: JSON-serialisable extras, e.g. reward components.
    """

    reward: float
    terminated: bool
    next_messages: list[Message] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class TextTask(ABC):
    """A language task at the text level: messages in, reply text out.

    Subclasses implement :meth:`reset` and :meth:`step` and draw every random number
    from the ``rng`` they are given, so a task is reproducible from the env's seed.
    Constructor arguments must be JSON values, so a task can be rebuilt from a spec.
    The current episode's state lives in attributes that ``reset`` and ``step`` assign
    anew (never mutate in place), so shallow copies of one task, which share its data,
    can play episodes side by side (an engine steps many trajectories at once).
    """

    @abstractmethod
    def reset(self, rng: np.random.Generator, options: Mapping[str, Any] | None = None) -> TaskPrompt:
        """Start an episode and return the conversation the agent replies to."""

    @abstractmethod
    def step(self, reply: str) -> TurnResult:
        """Score the agent's reply and say what comes next."""

    def prompt_ids(self) -> Sequence[str] | None:
        """Every prompt id of this task's split, in a fixed order; None when prompts are generated without end."""
        return None


def _reject_non_integer(action: Any, what: str) -> None:
    if action is None:
        raise TypeError(f"{what} must be an integer, got None")
    if isinstance(action, (bool, np.bool_)):
        raise TypeError(f"{what} must be an integer, got bool {action!r}")
    if isinstance(action, (float, np.floating)):
        if math.isnan(action):
            raise ValueError(f"{what} is NaN; it must be an integer")
        raise TypeError(f"{what} must be an integer, got float {action!r}")
    if not isinstance(action, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {type(action).__name__} {action!r:.80}")


def as_index(action: Any, size: int, what: str = "action") -> int:
    """Return ``action`` as an int in ``[0, size)`` or raise naming the bad value.

    Accepts Python and NumPy integers and 0-d or one-element integer arrays (as SB3's
    vector envs pass them).
    """
    if isinstance(action, np.ndarray):
        if action.size != 1:
            raise ValueError(f"{what} must be a single integer, got an array of shape {action.shape}")
        if not np.issubdtype(action.dtype, np.integer):
            # tolist(): a Python value for any dtype (an object array's element has no .item()).
            _reject_non_integer(action.reshape(-1).tolist()[0], what)
        action = action.reshape(-1)[0]
    _reject_non_integer(action, what)
    index = int(action)
    if not 0 <= index < size:
        raise ValueError(f"{what} {index} is out of range [0, {size})")
    return index


def as_token_array(action: Any, length: int, vocab_size: int, what: str = "action") -> np.ndarray:
    """Return ``action`` as an int64 array of ``length`` token ids or raise naming the bad value."""
    if action is None:
        raise TypeError(f"{what} must be an array of {length} token ids, got None")
    array = np.asarray(action)
    if array.shape != (length,):
        raise ValueError(f"{what} must have shape ({length},), got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
            raise ValueError(f"{what} holds NaN at index {int(np.flatnonzero(np.isnan(array))[0])}")
        raise TypeError(f"{what} must hold integer token ids, got dtype {array.dtype}")
    bad = np.flatnonzero((array < 0) | (array >= vocab_size))
    if bad.size:
        raise ValueError(f"{what}[{bad[0]}] = {array[bad[0]]} is out of range [0, {vocab_size})")
    return array.astype(np.int64)


def _json_value(value: Any, what: str) -> Any:
    """Convert NumPy scalars to Python and check the value is JSON-serialisable and finite."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} is not finite: {value!r}")
    if isinstance(value, Mapping):
        return {str(k): _json_value(v, f"{what}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v, f"{what}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{what} is not JSON-serialisable: {type(value).__name__}")


def guard_metrics(replies: Sequence[tuple[str, bool, Mapping[str, float]]]) -> dict[str, Any]:
    """Cheap statistics of an episode's replies that expose reward hacking and degenerate output.

    Args:
        replies: ``(text, finished, reward_components)`` for each reply of the episode.

    Returns:
        ``reply_words`` (mean words per reply), ``distinct_1`` and ``distinct_2`` (over all
        replies), ``repetition_2`` (the highest within-reply rate of repeated bigrams),
        ``empty_replies``, ``unfinished_replies`` (cut by the token budget) and
        ``reward_components`` (each component summed over the replies).

    >>> guard_metrics([("ok ok ok ok", True, {"f1": 0.5}), ("", False, {"f1": 0.0})])["repetition_2"]
    0.6666666666666666
    """
    from textgym.metrics.functional import distinct_n, repetition_rate, words

    texts = [text for text, _, _ in replies]
    components: dict[str, float] = {}
    for _, _, reply_components in replies:
        for name, value in reply_components.items():
            components[name] = components.get(name, 0.0) + float(value)
    return {
        "reply_words": sum(len(words(text)) for text in texts) / max(len(texts), 1),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "repetition_2": max(repetition_rate(text, 2) for text in texts),
        "empty_replies": sum(not text.strip() for text in texts),
        "unfinished_replies": sum(not finished for _, finished, _ in replies),
        "reward_components": components,
    }


class TextEpisode:
    """The rules of one episode of a :class:`TextTask`, at the text level: the one episode driver.

    :class:`TextEnv`, the engine adapters (:mod:`textgym.integrations`), the batch reward
    functions (:mod:`textgym.rewards`) and the leaderboard's re-scoring all play episodes
    through this class, so how an episode starts, goes on and ends is written once.

    ``reset`` draws the prompt and validates its messages; each ``step`` scores one reply
    with the task, validates what the task returns and appends the reply and the next
    messages to :attr:`messages`. ``end`` closes an episode early (a reply cut by a token
    budget). Stepping before ``reset`` or after the end raises ``ResetNeeded``.

    Args:
        task: The task to play.

    Attributes:
        prompt: The validated prompt of the current episode.
        messages: The conversation so far (prompt, replies, next messages).
        rewards: The reward of each reply so far.
        replies: ``(text, finished, reward_components)`` of each reply, for :func:`guard_metrics`.
        state: ``"not_started"``, ``"running"`` or ``"over"``.
        terminated: Whether the task said it is over.
    """

    def __init__(self, task: TextTask) -> None:
        self.task = task
        self.state = "not_started"
        self.terminated = False

    def reset(self, rng: np.random.Generator, options: Mapping[str, Any] | None = None) -> TaskPrompt:
        """Start an episode: the task draws (or, with ``options["prompt_id"]``, takes) a prompt."""
        prompt = self.task.reset(rng, options)
        messages = validate_messages(prompt.messages, f"prompt {prompt.prompt_id!r} messages")
        self.prompt = TaskPrompt(messages, prompt.prompt_id, _json_value(prompt.info, "prompt info"))
        self.messages: list[Message] = [dict(m) for m in messages]
        self.rewards: list[float] = []
        self.replies: list[tuple[str, bool, dict[str, float]]] = []
        self.state, self.terminated = "running", False
        return self.prompt

    @property
    def turn(self) -> int:
        """Replies given so far in this episode."""
        return len(self.rewards)

    @property
    def total_reward(self) -> float:
        """The sum of the rewards so far."""
        return float(sum(self.rewards))

    def step(self, reply: str, finished: bool = True) -> TurnResult:
        """Score one reply and say what comes next.

        Args:
            reply: The reply text.
            finished: Whether the reply ended on its own (False when a token budget cut it);
                recorded for the guard metrics.

        Returns:
            The task's :class:`TurnResult`, its messages validated and its info JSON-checked.

        Raises:
            gymnasium.error.ResetNeeded: Before ``reset`` or after the episode ended.
            ValueError: The task returned a non-finite reward or invalid next messages.
        """
        if self.state == "not_started":
            raise gym.error.ResetNeeded("step() called before reset(); call reset() first")
        if self.state == "over":
            raise gym.error.ResetNeeded("step() called after the episode ended; call reset() first")
        if not isinstance(reply, str):
            raise TypeError(f"a reply must be a str, got {type(reply).__name__}: {reply!r:.80}")
        result = self.task.step(reply)
        reward = float(result.reward)
        if not math.isfinite(reward):
            raise ValueError(
                f"{type(self.task).__name__} returned a non-finite reward {result.reward!r} for {reply!r:.80}"
            )
        terminated = bool(result.terminated)
        next_messages = (
            validate_messages(result.next_messages, "task next_messages")
            if result.next_messages and not terminated
            else []
        )
        info = _json_value(result.info, "task info")
        self.rewards.append(reward)
        self.replies.append((reply, bool(finished), dict(info.get("reward_components", {}))))
        self.messages += [{"role": "assistant", "content": reply}, *next_messages]
        if terminated:
            self.state, self.terminated = "over", True
        return TurnResult(reward, terminated, next_messages, info)

    def end(self) -> None:
        """End the episode before the task is over (e.g. a reply ran into a token budget)."""
        self.state = "over"

    def guard(self) -> dict[str, Any]:
        """:func:`guard_metrics` of the replies so far."""
        return guard_metrics(self.replies)


def play_episode(
    task: TextTask,
    replies: Sequence[str],
    *,
    seed: int | None = None,
    prompt_id: str | None = None,
    next_messages: Sequence[Sequence[Message]] | None = None,
) -> TextEpisode:
    """Play a whole episode of ``task`` with the given reply texts; return the episode.

    The prompt is the one ``TextEnv.reset(seed=seed)`` draws or, with ``prompt_id``, the
    one ``reset(options={"prompt_id": prompt_id})`` gives.

    Args:
        task: The task.
        replies: The agent's replies, in order; fewer than the episode allows leave it running.
        seed: The reset seed (with no ``prompt_id``).
        prompt_id: The prompt to play.
        next_messages: What the conversation held after each reply but the last (e.g. the
            user turns of a recorded multi-turn conversation); each must equal what the
            task says follows.

    Raises:
        ValueError: More replies than the episode has turns, or recorded next messages
            that differ from the task's.
    """
    from gymnasium.utils import seeding

    episode = TextEpisode(task)
    rng, _ = seeding.np_random(None if seed is None else check_integer(seed, "seed", minimum=0))
    episode.reset(rng, None if prompt_id is None else {"prompt_id": prompt_id})
    for index, reply in enumerate(replies):
        result = episode.step(reply)
        if index == len(replies) - 1:
            break
        if episode.state == "over":
            raise ValueError(
                f"prompt {episode.prompt.prompt_id!r}: the episode ended after reply {index}, "
                f"but {len(replies)} replies were given"
            )
        if next_messages is not None:
            recorded = [dict(m) for m in next_messages[index]] if index < len(next_messages) else None
            if recorded != result.next_messages:
                raise ValueError(
                    f"prompt {episode.prompt.prompt_id!r}: after reply {index} the task says "
                    f"{result.next_messages!r:.120} follows, the conversation holds {recorded!r:.120}"
                )
    return episode


class TextEnv(gym.Env[dict, Any]):
    """Base env: a :class:`TextTask` viewed through an LM's token, candidate or utterance actions.

    Subclasses set :attr:`task_class` and write the task's documentation; everything
    else (tokenization, chat template, spaces, budgets, seeding, rendering) lives here.

    Observation Space:
        A ``Dict`` of fixed shapes, ids left-padded so the newest token is always last:

        * ``input_ids``: ``Box(0, V - 1, (max_context_tokens,), int32)``, the chat-template
          context (conversation so far, plus the reply written so far at token level).
          A longer context keeps its last ``max_context_tokens`` tokens and reset/step
          info says ``context_truncated``.
        * ``attention_mask``: ``Box(0, 1, (max_context_tokens,), int8)``.
        * candidate level only: ``candidate_ids`` ``Box(0, V - 1, (K * max_reply_tokens,), int32)``
          and ``candidate_mask`` ``Box(0, 1, (K * max_reply_tokens,), int8)``: K right-padded
          candidates flattened row-major (SB3 accepts only 1-D non-image Boxes);
          ``.reshape(K, max_reply_tokens)`` gives one row per candidate.

        Message text is data: special-token strings inside it (e.g. ``<|im_end|>`` in a
        dataset utterance or spelled out by the agent) are ordinary tokens; only the chat
        template's own structure yields control tokens (see :mod:`textgym.chat`). After a
        reply, the next turn's context holds the reply's token ids as the agent produced
        them (token and utterance level) or as the LM proposed them (candidate level),
        then the template's end of turn and the next messages: earlier turns are never
        decoded and re-encoded. A template that rewrites earlier turns cannot grow by
        appending; then each turn's context is the whole conversation encoded anew.

        Texts (messages, candidates, the finished reply) go in ``info``; the reference
        answer never appears in observations or info.

    Episode End:
        Terminated when the task is over (its last turn answered, or a task-defined end).
        Truncated, at token level only, when a reply reaches ``max_reply_tokens`` tokens
        without an end token: the reply is still scored, then the episode stops. If that
        was the last reply, the task is over too and the step is both terminated and
        truncated (nothing is left to bootstrap); otherwise the returned observation is the
        next turn's context, the state a value function should bootstrap from. At the
        candidate and utterance levels a reply is one action, so its length never truncates
        the episode. ``info["end_reason"]`` says why an episode ended and
        ``info["reply_finished"]`` whether a reply ended with an end token.

    Arguments:
        granularity: ``"token"``, ``"candidate"`` or ``"utterance"``.
        model: The LM whose tokenizer (and, at candidate level, generations) define the
            action space: ``"default"``, ``"tiny"``, a local directory or a hub id.
        max_context_tokens: Observation length.
        max_reply_tokens: Token budget of one reply.
        num_candidates: K, candidate level only.
        proposal_temperature: Sampling temperature of candidates 2..K.
        render_mode: ``None``, ``"ansi"`` or ``"human"``.
        **task_options: Passed to the task's constructor.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 4}
    task_class: ClassVar[type[TextTask]]

    def __init__(
        self,
        granularity: str = "token",
        model: str = "default",
        max_context_tokens: int = 256,
        max_reply_tokens: int = 32,
        num_candidates: int = 4,
        proposal_temperature: float = 0.7,
        render_mode: str | None = None,
        **task_options: Any,
    ) -> None:
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        for name, value, low in (
            ("max_context_tokens", max_context_tokens, 8),
            ("max_reply_tokens", max_reply_tokens, 1),
            ("num_candidates", num_candidates, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        try:
            self.task = self.task_class(**task_options)
        except TypeError as error:
            raise TypeError(f"{type(self).__name__}: {error}") from error
        self.granularity = granularity
        self.model_name = model
        self.max_context_tokens = int(max_context_tokens)
        self.max_reply_tokens = int(max_reply_tokens)
        self.num_candidates = int(num_candidates)
        self.proposal_temperature = float(proposal_temperature)
        self.render_mode = render_mode
        self._load_lm()

        length, vocab = self.max_context_tokens, self.vocab_size
        observation = {
            "input_ids": spaces.Box(0, vocab - 1, (length,), np.int32),
            "attention_mask": spaces.Box(0, 1, (length,), np.int8),
        }
        if granularity == "token":
            self.action_space = spaces.Discrete(vocab)
        elif granularity == "candidate":
            # Flattened row-major (K * L,): SB3 warns on 2-D non-image Boxes.
            shape = (self.num_candidates * self.max_reply_tokens,)
            observation["candidate_ids"] = spaces.Box(0, vocab - 1, shape, np.int32)
            observation["candidate_mask"] = spaces.Box(0, 1, shape, np.int8)
            self.action_space = spaces.Discrete(self.num_candidates)
        else:
            self.action_space = spaces.MultiDiscrete(np.full(self.max_reply_tokens, vocab, dtype=np.int64))
        self.observation_space = spaces.Dict(observation)
        self._episode = TextEpisode(self.task)

    # -- language model ---------------------------------------------------------------

    def _load_lm(self) -> None:
        """Load the tokenizer (and, at candidate level, the proposing LM) by name."""
        from textgym.chat import chat_encoder
        from textgym.models import eos_token_ids, load_tokenizer, resolve_model_path

        self.tokenizer = load_tokenizer(self.model_name)
        self.chat = chat_encoder(self.model_name)
        self.vocab_size = len(self.tokenizer)
        self.end_ids = frozenset(eos_token_ids(self.tokenizer, resolve_model_path(self.model_name)))
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.proposer = None
        if self.granularity == "candidate":
            from textgym.lm import LocalLanguageModel

            self.proposer = LocalLanguageModel(self.model_name, temperature=self.proposal_temperature)

    def __getstate__(self) -> dict[str, Any]:
        # The tokenizer and LM are reloaded by name (cached per process), not pickled.
        state = self.__dict__.copy()
        for name in ("tokenizer", "chat", "proposer"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._load_lm()

    # -- Gymnasium API ----------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode: the task draws a prompt with ``self.np_random``.

        ``seed`` may be a Python or NumPy integer (>= 0), not a bool.
        """
        super().reset(seed=None if seed is None else check_integer(seed, "seed", minimum=0))
        prompt = self._episode.reset(self.np_random, options)
        return self._start_turn(self.chat.encode(prompt.messages), {"prompt_id": prompt.prompt_id, **prompt.info})

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply one action; a reply that ends is scored by the task."""
        if self._episode.state == "not_started":
            raise gym.error.ResetNeeded("step() called before reset(); call env.reset() first")
        if self._episode.state == "over":
            raise gym.error.ResetNeeded("step() called after the episode ended; call env.reset() first")
        if self.granularity == "token":
            token = as_index(action, self.vocab_size)
            self._reply_ids.append(token)
            if token in self.end_ids:
                return self._finish_reply(self._reply_ids[:-1], finished=True)
            if len(self._reply_ids) >= self.max_reply_tokens:
                return self._finish_reply(self._reply_ids, finished=False)
            self._push_context(token)
            return self._observation(), 0.0, False, False, {"turn": self._episode.turn}
        if self.granularity == "candidate":
            index = as_index(action, self.num_candidates)
            chosen = self._candidates[index]
            return self._finish_reply(
                self._candidate_tokens[index], chosen.finished, text=chosen.text, extra={"candidate": index}
            )
        tokens = as_token_array(action, self.max_reply_tokens, self.vocab_size).tolist()
        ends = [i for i, token in enumerate(tokens) if token in self.end_ids]
        if ends:
            return self._finish_reply(tokens[: ends[0]], finished=True)
        return self._finish_reply(tokens, finished=False)

    def action_masks(self) -> np.ndarray:
        """Valid actions (sb3-contrib convention): at candidate level, the distinct candidates."""
        if self.granularity == "candidate":
            if self._episode.state != "running":
                raise gym.error.ResetNeeded("action_masks() needs a running episode; call env.reset() first")
            return self._candidate_valid.copy()
        if self.granularity == "token":
            return np.ones(self.vocab_size, dtype=bool)
        raise NotImplementedError("action_masks() is defined for token and candidate levels, not utterance")

    def render(self) -> str | None:
        """Return (``"ansi"``) or print (``"human"``) the conversation so far."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'human' to make()")
            return None
        text = self._transcript()
        if self.render_mode == "ansi":
            return text
        print(text)
        return None

    # -- mechanics --------------------------------------------------------------------

    def _transcript(self) -> str:
        if self._episode.state == "not_started":
            return ""
        lines = [f"[{m['role']}] {m['content']}" for m in self._episode.messages]
        if self._episode.state == "running" and self.granularity == "token" and self._reply_ids:
            lines.append(f"[assistant, writing] {self.tokenizer.decode(self._reply_ids)}")
        if self._episode.state == "running" and self.granularity == "candidate":
            lines += [f"  candidate {i}: {c.text}" for i, c in enumerate(self._candidates)]
        return "\n".join(lines)

    def _start_turn(self, context: list[int], info: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Make ``context`` (the whole conversation's ids) this turn's observation (and propose candidates)."""
        self._turn_context = list(context)
        info = {**info, "turn": self._episode.turn, "messages": [dict(m) for m in self._episode.messages]}
        info["context_truncated"] = len(context) > self.max_context_tokens
        window = context[-self.max_context_tokens :]
        self._ids = np.full(self.max_context_tokens, self.pad_id, dtype=np.int32)
        self._mask = np.zeros(self.max_context_tokens, dtype=np.int8)
        self._ids[len(self._ids) - len(window) :] = window
        self._mask[len(self._mask) - len(window) :] = 1
        self._reply_ids: list[int] = []
        if self.granularity == "candidate":
            self._propose()
            info["candidates"] = [c.text for c in self._candidates]
        return self._observation(), info

    def _propose(self) -> None:
        seed = int(self.np_random.integers(2**31 - 1))
        proposals = self.proposer.propose(self._turn_context, self.num_candidates, self.max_reply_tokens, seed)
        ids = np.full((self.num_candidates, self.max_reply_tokens), self.pad_id, dtype=np.int32)
        mask = np.zeros_like(ids, dtype=np.int8)
        valid = np.zeros(self.num_candidates, dtype=bool)
        tokens_of: list[list[int]] = []
        seen: set[str] = set()
        # A repeated candidate stays selectable (same text as its twin) but is masked out.
        for index, completion in enumerate(proposals):
            valid[index] = completion.text not in seen
            seen.add(completion.text)
            tokens = completion.token_ids
            if tokens is None:  # an LM that gives text alone: its text is data
                tokens = self.chat.encode_text(completion.text)
            tokens = list(tokens[: self.max_reply_tokens])
            ids[index, : len(tokens)] = tokens
            mask[index, : len(tokens)] = 1
            tokens_of.append(tokens)
        self._candidates, self._candidate_tokens = proposals, tokens_of
        self._candidate_ids, self._candidate_mask, self._candidate_valid = ids, mask, valid

    def _push_context(self, token: int) -> None:
        self._ids[:-1] = self._ids[1:]
        self._mask[:-1] = self._mask[1:]
        self._ids[-1] = token
        self._mask[-1] = 1

    def _observation(self) -> dict[str, np.ndarray]:
        observation = {"input_ids": self._ids.copy(), "attention_mask": self._mask.copy()}
        if self.granularity == "candidate":
            observation["candidate_ids"] = self._candidate_ids.flatten()
            observation["candidate_mask"] = self._candidate_mask.flatten()
        return observation

    def _finish_reply(
        self,
        reply_ids: list[int],
        finished: bool,
        text: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Score a whole reply with the task, then start the next turn or end the episode.

        ``reply_ids`` are the reply's tokens without its end token, kept as they are in the
        next turn's context.
        """
        if text is None:
            text = self.chat.decode_reply(reply_ids)
        answered = list(self._episode.messages)
        result = self._episode.step(text, finished)
        info = {"turn": self._episode.turn - 1, "reply": text, "reply_finished": finished, **(extra or {})}
        info.update(result.info)
        # Only at token level is the reply budget a step budget the agent ran into; at the
        # other levels a reply is one action and its length is part of the action space.
        truncated = self.granularity == "token" and not finished
        if result.terminated:
            observation = self._observation()
        else:
            # The next turn's context: where a truncated conversation would have gone on, so
            # that value bootstrapping from it counts only the turns that were cut off.
            if self.chat.appendable:
                context = self._turn_context + list(reply_ids) + self.chat.continuation(answered, result.next_messages)
            else:
                context = self.chat.encode(self._episode.messages)
            observation, info = self._start_turn(context, info)
        if result.terminated or truncated:
            self._episode.end()
            info["end_reason"] = "reply_token_budget" if truncated else "task_over"
            info["episode_reward"] = self._episode.total_reward
            info["messages"] = [dict(m) for m in self._episode.messages]
            info["guard"] = self._episode.guard()
        return observation, float(result.reward), bool(result.terminated), truncated, info
