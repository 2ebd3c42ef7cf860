r"""Token ids of a chat conversation in which the template is structure and message text is data.

Rendering a conversation with ``apply_chat_template`` and tokenizing the result as one
string lets the text *inside* a message become control tokens: a dataset utterance or an
agent's reply that contains ``<|im_end|>\n<|im_start|>system`` opens a fake system turn.
:class:`ChatEncoder` renders the template with placeholder contents instead, tokenizes the
template's own text normally (its special-token strings become control tokens) and each
message's text with ``split_special_tokens=True`` (special-token strings in it become
ordinary tokens), then joins the pieces. For text without special-token strings the ids
are those of the usual render-then-tokenize path.

:meth:`ChatEncoder.continuation` gives the ids that follow an assistant reply: the
template's end of turn, the next messages and the generation prompt. An env or an engine
that keeps the reply's own token ids and appends these never decodes and re-encodes an
earlier turn (token-in/token-out), so the ids the policy produced are the ids it sees.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from textgym.core import Message

# Placeholders are delimited by a private-use code point: chat templates and tokenizers
# leave it alone, and one that no message holds always exists.
_PRIVATE_USE = range(0xE000, 0xF900)


def _placeholder(index: int, mark: str = chr(_PRIVATE_USE[0])) -> str:
    return f"{mark}textgym{index}{mark}"


def _free_mark(messages: Sequence[Message]) -> str:
    used = set().union(*(message["content"] for message in messages)) if messages else set()
    return next(chr(code) for code in _PRIVATE_USE if chr(code) not in used)


class ChatTemplateError(ValueError):
    """A tokenizer whose chat template cannot be used to encode message text as data."""


class ChatEncoder:
    """Encode conversations with a Hugging Face tokenizer's chat template, message text as data.

    Args:
        tokenizer: A Hugging Face tokenizer with a chat template.

    Raises:
        ChatTemplateError: The tokenizer has no chat template, or its template does not
            render a message's content where the message is.

    >>> from textgym.models import load_tokenizer
    >>> encoder = ChatEncoder(load_tokenizer("default"))
    >>> ids = encoder.encode([{"role": "user", "content": "hi <|im_end|>"}])
    >>> ids.count(encoder.tokenizer.convert_tokens_to_ids("<|im_end|>"))  # the template's own end of turn only
    2
    """

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError(f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template")
        self.tokenizer = tokenizer
        probe = self._render([{"role": "user", "content": f" {_placeholder(0)} "}], add_generation_prompt=False)
        if _placeholder(0) not in probe:
            raise ChatTemplateError("the chat template does not render a user message's content")
        # Some templates strip each message's content (``| trim``); text spliced into their
        # rendering must be stripped too, or the ids would differ from the template's.
        self._strips_content = f" {_placeholder(0)} " not in probe
        continues = [
            {"role": "user", "content": _placeholder(0)},
            {"role": "assistant", "content": _placeholder(1)},
            {"role": "user", "content": _placeholder(2)},
        ]
        before = self._render(continues[:1], add_generation_prompt=True)
        after = self._render(continues, add_generation_prompt=True)
        #: Whether the rendering up to a reply equals the prompt it answered; only then can a
        #: conversation grow by appending ids (templates that rewrite earlier turns, e.g. by
        #: dropping reasoning, cannot).
        self.appendable = after.startswith(before + _placeholder(1))

    # -- rendering ----------------------------------------------------------------------

    def _render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            [dict(message) for message in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _pieces(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[tuple[str, int | None]]:
        """The rendered conversation as ``(text, message index)`` pieces; index None for template text."""
        mark = _free_mark(messages)
        placeholders = [{"role": m["role"], "content": _placeholder(i, mark)} for i, m in enumerate(messages)]
        rendered = self._render(placeholders, add_generation_prompt)
        pieces: list[tuple[str, int | None]] = []
        start = 0
        for match in re.finditer(f"{mark}textgym(\\d+){mark}", rendered):
            pieces.append((rendered[start : match.start()], None))
            pieces.append((messages[int(match.group(1))]["content"], int(match.group(1))))
            start = match.end()
        pieces.append((rendered[start:], None))
        return [(text, index) for text, index in pieces if text or index is not None]

    # -- tokenizing ---------------------------------------------------------------------

    def encode_text(self, text: str) -> list[int]:
        """Token ids of ``text`` as data: special-token strings in it become ordinary tokens."""
        return self._encode_plain(text.strip() if self._strips_content else text)

    @functools.cached_property
    def _special_pattern(self) -> re.Pattern[str]:
        added = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        strings = {token.content for token in added.values() if token.special} | set(self.tokenizer.all_special_tokens)
        return re.compile("(" + "|".join(re.escape(t) for t in sorted(strings, key=len, reverse=True)) + ")")

    def _encode_pieces(self, pieces: Sequence[tuple[str, int | None]]) -> list[int]:
        """Token ids of rendered pieces: the template's special tokens as such, everything else as text.

        A tokenizer splits its input at special tokens before anything else, so the text
        between two of the template's special tokens (template text and message text alike)
        is tokenized in one call, as the plain render-then-tokenize path would; only there
        special-token strings are read as text.
        """
        ids: list[int] = []
        text: list[str] = []

        def flush() -> None:
            if text:
                ids.extend(self._encode_plain("".join(text)))
                text.clear()

        for piece, index in pieces:
            if index is not None:
                text.append(piece.strip() if self._strips_content else piece)
                continue
            for position, part in enumerate(self._special_pattern.split(piece)):
                if position % 2:
                    flush()
                    ids.append(self.tokenizer.convert_tokens_to_ids(part))
                elif part:
                    text.append(part)
        flush()
        return ids

    def _encode_plain(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def encode(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of ``messages`` under the chat template (ready for the assistant's reply by default)."""
        return self._encode_pieces(self._pieces(messages, add_generation_prompt))

    def continuation(self, messages: Sequence[Message], next_messages: Sequence[Message]) -> list[int]:
        """The ids that follow an assistant reply's own tokens.

        ``messages`` is the conversation the reply answered; ``next_messages`` what follows
        it (e.g. the next user turn). The result is the template's end of the assistant
        turn, ``next_messages`` and the generation prompt, so that
        ``encode(messages) + reply_ids + continuation(messages, next_messages)`` is the next
        turn's context with the reply's ids kept as they were produced.

        Raises:
            ChatTemplateError: The template rewrites earlier turns (:attr:`appendable` is False).
        """
        if not self.appendable:
            raise ChatTemplateError(
                "this chat template rewrites earlier turns, so a conversation cannot grow by appending token ids"
            )
        reply = len(messages)
        conversation = [*messages, {"role": "assistant", "content": ""}, *next_messages]
        pieces = self._pieces(conversation, add_generation_prompt=True)
        position = next(i for i, (_, index) in enumerate(pieces) if index == reply)
        return self._encode_pieces(pieces[position + 1 :])

    def decode_reply(self, reply_ids: Sequence[int]) -> str:
        """The text of a reply's token ids (its end token excluded), as every textgym env and adapter scores it.

        Special tokens are dropped and surrounding whitespace stripped, so a reply's text does
        not depend on how its generator marked the end or padded it.
        """
        return self.tokenizer.decode(list(reply_ids), skip_special_tokens=True).strip()

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of the tokenizer's special tokens (those no text encoded as data can produce)."""
        added = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        return frozenset(self.tokenizer.all_special_ids) | {i for i, token in added.items() if token.special}


@functools.lru_cache(maxsize=8)
def chat_encoder(model: str) -> ChatEncoder:
    """The (per-process) :class:`ChatEncoder` of model ``model``'s tokenizer."""
    from textgym.models import load_tokenizer

    return ChatEncoder(load_tokenizer(model))
