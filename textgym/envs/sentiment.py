"""Sentiment: continue the opening words of a movie review as positively as possible."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from textgym.core import Message, TaskPrompt, TurnResult, validate_text
from textgym.data import split_of
from textgym.tasks import PromptSetTask
from textgym.text_env import TextEnv

DEFAULT_SYSTEM_PROMPT = "Continue the movie review. Write only the words that come next."

#: How a review starts: (key, text). The empty opener starts with the subject itself.
OPENERS: tuple[tuple[str, str], ...] = (
    ("plain", ""),
    ("honestly", "Honestly,"),
    ("frankly", "Frankly,"),
    ("have-to-say", "I have to say"),
    ("watched-twice", "After watching it twice,"),
    ("low-expectations", "Going in with low expectations,"),
    ("friday-rental", "We rented it on a Friday night and"),
    ("trailer", "Compared to the trailer,"),
    ("critics", "Whatever the critics say,"),
    ("surprise", "To my surprise,"),
    ("with-kids", "Watching it with my kids, I noticed that"),
    ("book-fan", "As a fan of the book,"),
    ("overall", "Overall,"),
    ("first-hour", "By the end of the first hour,"),
    ("walking-out", "Walking out of the theater, I felt that"),
    ("second-viewing", "On a second viewing,"),
    ("genre", "For a film of this genre,"),
    ("budget", "Considering its budget,"),
    ("festival", "Having seen it at a festival,"),
    ("my-friends", "My friends keep telling me that"),
)

#: What the review talks about: (key, text), lower case.
SUBJECTS: tuple[tuple[str, str], ...] = (
    ("film-was", "the film was"),
    ("acting", "the acting in this movie"),
    ("plot", "the plot"),
    ("soundtrack", "the soundtrack"),
    ("ending", "the ending"),
    ("dialogue", "the dialogue"),
    ("cinematography", "the cinematography"),
    ("lead", "the lead actor's performance"),
    ("pacing", "the pacing of the second half"),
    ("effects", "the special effects"),
    ("supporting-cast", "the supporting cast"),
    ("script", "the script"),
    ("director", "the director"),
    ("villain", "the villain"),
    ("story-felt", "the story felt"),
)


def review_prompts() -> dict[str, str]:
    """Every review opening, ``{id: text}``: each opener with each subject, in a fixed order.

    The id is ``"<opener key>.<subject key>"``; the split is a hash of it.

    >>> prompts = review_prompts()
    >>> len(prompts)
    300
    >>> prompts["plain.acting"], prompts["honestly.film-was"]
    ('The acting in this movie', 'Honestly, the film was')
    """
    prompts = {}
    for opener_key, opener in OPENERS:
        for subject_key, subject in SUBJECTS:
            text = f"{opener} {subject}" if opener else subject[0].upper() + subject[1:]
            prompts[f"{opener_key}.{subject_key}"] = text
    return prompts


@functools.lru_cache(maxsize=1)
def _analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def _completion_text(completion: str | Sequence[Mapping[str, str]]) -> str:
    """The text of a completion: a string, or (TRL's conversational format) its last message's content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"a completion must be a str or a list of messages, got {completion!r:.80}")


def sentiment_reward(completions: Sequence[str] | Sequence[Sequence[Message]], **kwargs: Any) -> list[float]:
    """The Sentiment reward of each completion: its VADER compound score, in [-1, 1].

    VADER (PyPI ``vaderSentiment``, MIT licence) is a lexicon- and rule-based scorer that
    runs offline; its compound score is the normalised sum of the valences of the text's
    words, adjusted for negation, intensifiers, capitals and punctuation. Only the
    completion is scored, not the prompt it continues. Empty text scores 0.

    The signature follows TRL's reward functions: extra keyword arguments (prompts,
    dataset columns) are accepted and ignored, and a completion may be a string or a
    list of chat messages whose last message is scored.

    Args:
        completions: The generated continuations.
        **kwargs: Ignored.

    >>> sentiment_reward(["was great.", "was terrible.", ""])
    [0.6249, -0.4767, 0.0]
    >>> sentiment_reward([[{"role": "assistant", "content": "was great."}]])
    [0.6249]

    Raises:
        TypeError: ``completions`` is a string or not a sequence, or a completion is neither
            a string nor a list of messages.
    """
    if isinstance(completions, str) or not isinstance(completions, Sequence):
        # A string is a sequence too: of one-character completions, each silently scored.
        raise TypeError(f"completions must be a list, got {type(completions).__name__}: {completions!r:.80}")
    analyzer = _analyzer()
    return [float(analyzer.polarity_scores(_completion_text(c))["compound"]) for c in completions]


class SentimentTask(PromptSetTask):
    """Text-level Sentiment: see :class:`SentimentEnv`."""

    def __init__(self, split: str = "train", system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> None:
        super().__init__(split)
        self.system_prompt = validate_text(system_prompt, "system_prompt")
        self.prompts = [(key, text) for key, text in review_prompts().items() if split_of(key) == split]
        self.index_prompts([key for key, _ in self.prompts], "the review prompt set", "prompts")

    def start_episode(self, prompt_id: str) -> tuple[TaskPrompt, str]:
        """Give the review opening ``prompt_id`` to continue; the state is its id."""
        _, text = self.prompts[self._by_id[prompt_id]]
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": text}]
        return TaskPrompt(messages, prompt_id), prompt_id

    def score_reply(self, state: str, reply: str) -> tuple[TurnResult, None]:
        """Score the continuation's positivity; the episode ends."""
        score = sentiment_reward([reply])[0]
        return TurnResult(score, True, [], {"reward_components": {"vader_compound": score}}), None


class SentimentEnv(TextEnv):
    """Sentiment: continue the opening words of a movie review, as positively as possible.

    ## Description
    The analogue of the IMDB positive-continuation task of RL4LMs / GRUE, fully offline.
    Each episode gives the first words of a review, built from templates: one of 20
    openers ("Honestly,", "Going in with low expectations,", ...) with one of 15
    subjects ("the film was", "the acting in this movie", ...), 300 prompts in all. The
    conversation is a system message (default "Continue the movie review. Write only
    the words that come next.") and the review opening as the user message; the agent's
    reply is the continuation. The same task backs three ids, one per action
    granularity (see :class:`textgym.text_env.TextEnv`).

    ## Action Space
    * ``TextGym/Sentiment-v0``: ``Discrete(V)``, the next token of the continuation
      (V = 49,152 for the default SmolLM2 tokenizer). An end token ends it.
    * ``TextGym/SentimentCandidate-v0``: ``Discrete(K)``, one of K continuations that the
      env's LM proposes (its greedy one is candidate 0; ``action_masks()`` marks
      duplicates invalid).
    * ``TextGym/SentimentUtterance-v0``: ``MultiDiscrete([V] * max_reply_tokens)``, the
      whole continuation as token ids, read up to the first end token.

    ## Observation Space
    ``Dict(input_ids=Box(int32), attention_mask=Box(int8))`` of length
    ``max_context_tokens`` holding the chat-template context, left-padded; the candidate
    level adds ``candidate_ids`` and ``candidate_mask`` (K x ``max_reply_tokens``, flattened).

    ## Rewards
    Once, when the continuation ends: its VADER compound score (PyPI ``vaderSentiment``,
    a lexicon- and rule-based sentiment scorer), in [-1, 1], from -1 for the most negative
    to +1 for the most positive text. The continuation alone is scored, without the
    prompt; an empty continuation scores 0. ``info["reward_components"]`` holds
    ``vader_compound``; :func:`sentiment_reward` is the same function on a list of texts.

    ## Starting State
    A prompt drawn uniformly with ``self.np_random`` from the split, or the one named by
    ``reset(options={"prompt_id": ...})``, an id like ``"honestly.film-was"``.

    ## Episode End
    Terminated after the continuation (a single turn). At token level, also truncated
    when it reaches ``max_reply_tokens`` without an end token (it is still scored).

    ## Arguments
    ``split`` (``"train"``, ``"validation"``, ``"test"``; a stable hash of the prompt id
    decides: about 240 / 30 / 30 prompts), ``system_prompt``, plus the
    :class:`textgym.text_env.TextEnv` arguments (``granularity``, ``model``,
    ``max_context_tokens``, ``max_reply_tokens``, ``num_candidates``,
    ``proposal_temperature``, ``render_mode``).

    ## Version History
    * v0: Initial version.
    """

    task_class = SentimentTask
