"""The one Gymnasium env over a :class:`~textgym.core.TextTask`, at three granularities.

:class:`TextEnv` turns a task into a Gymnasium env whose actions live in a language
model's space, at one of three granularities:

* ``"token"``: ``Discrete(V)``, one token of the LM vocabulary per step; an end token
  (or the reply token budget) ends the reply.
* ``"candidate"``: ``Discrete(K)``, the env's LM proposes K replies per turn (its greedy
  reply first) and the action picks one.
* ``"utterance"``: ``MultiDiscrete([V] * max_reply_tokens)``, a whole reply per step as
  token ids, read up to the first end token.

The episode itself (prompt, scoring, end) is played by :class:`textgym.core.TextEpisode`;
this module adds tokens, spaces, budgets and rendering.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from textgym.checks import check_integer
from textgym.core import TextEpisode, TextTask

GRANULARITIES = ("token", "candidate", "utterance")


def reply_budget_truncates(granularity: str) -> bool:
    """Whether, at ``granularity``, a reply cut by its token budget ends (truncates) the episode.

    Only at token level is the reply budget a step budget the agent runs into; at the
    candidate and utterance levels a reply is one action and its length is part of the
    action space, so an unfinished reply is scored and the episode goes on.

    >>> [reply_budget_truncates(g) for g in GRANULARITIES]
    [True, False, False]
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return granularity == "token"


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
            action = action.reshape(-1).tolist()[0]
        else:
            action = action.reshape(-1)[0]
    if isinstance(action, (float, np.floating)) and math.isnan(action):
        raise ValueError(f"{what} is NaN; it must be an integer")
    index = check_integer(action, what)
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
        cut_reply_ends = reply_budget_truncates(granularity)
        self.max_context_tokens = check_integer(max_context_tokens, "max_context_tokens", minimum=8)
        self.max_reply_tokens = check_integer(max_reply_tokens, "max_reply_tokens", minimum=1)
        self.num_candidates = check_integer(num_candidates, "num_candidates", minimum=1)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        try:
            self.task = self.task_class(**task_options)
        except TypeError as error:
            raise TypeError(f"{type(self).__name__}: {error}") from error
        self.granularity = granularity
        self.model_name = model
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
        self._episode = TextEpisode(self.task, cut_reply_ends)

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
        truncated = self._episode.truncated
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
        if self._episode.state == "over":
            info.update(self._episode.outcome(), messages=[dict(m) for m in self._episode.messages])
        return observation, float(result.reward), bool(result.terminated), truncated, info
