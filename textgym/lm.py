"""The language model an env itself uses, behind one small interface.

An env that needs an LM (the candidate level proposes K replies per turn) talks to a
:class:`LanguageModel`: messages in, completions out, as text. :class:`LocalLanguageModel`
runs a Hugging Face causal LM in-process with batched, KV-cached, seeded sampling;
a served endpoint can implement the same ``propose`` method later.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from textgym.checks import is_integer
from textgym.core import Message


@dataclass(frozen=True)
class Completion:
    """One generated reply.

    Attributes:
        text: The decoded reply, special tokens removed.
        finished: True if the reply ended with an end-of-sequence token, False if the
            token budget cut it.
        token_ids: The reply's tokens (end token excluded) when the LM shares the env's
            tokenizer; None to let the env tokenize ``text``.
    """

    text: str
    finished: bool
    token_ids: tuple[int, ...] | None = None


Prompt = Sequence[Message] | Sequence[int]
"""A conversation to reply to: chat messages, or the token ids of its context (token-in/token-out)."""


class LanguageModel(Protocol):
    """What an env needs from an LM: K seeded replies to a conversation."""

    def propose(self, prompt: Prompt, num_candidates: int, max_new_tokens: int, seed: int) -> list[Completion]:
        """Return ``num_candidates`` replies; the first is the greedy one, the rest are sampled with ``seed``.

        ``prompt`` is chat messages or, as a candidate-level env passes it, the token ids of
        the context (ready for the assistant's reply), which the LM must read as they are.
        """
        ...


@functools.lru_cache(maxsize=16)
def _cache_keyword(model_class: type) -> str:
    # transformers 5 renamed `past_key_values` to `cache`; accept either.
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


#: Spare columns an appendable cache layer reserves when it has to (re)allocate.
_RESERVED_COLUMNS = 64


def _room_after(cached: torch.Tensor) -> int:
    """Free columns after ``cached``'s last one, if it is a column range of a (B, H, C, D) buffer; else 0.

    Only tensors laid out like ``buffer[:, :, a:b]`` of a contiguous buffer qualify: a
    tensor that owns its storage exactly (the usual ``torch.cat`` result) has no room.
    """
    if cached.dim() != 4 or cached.numel() == 0:
        return 0
    batch, heads, length, dim = cached.shape
    stride = cached.stride()
    if stride[3] != 1 or stride[2] != dim or stride[1] % dim or (heads > 1 and stride[0] != heads * stride[1]):
        return 0
    capacity = stride[1] // dim
    start = (cached.storage_offset() % stride[1]) // dim
    end_of_storage = cached.storage_offset() + (batch - 1) * stride[0] + (heads - 1) * stride[1] + capacity * dim
    if end_of_storage - start * dim > cached.untyped_storage().nbytes() // cached.element_size():
        return 0
    return capacity - start - length


def append_columns(cached: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``torch.cat([cached, new], dim=2)`` that writes into spare columns of ``cached``'s buffer when it has them.

    A KV cache grown by concatenation copies all of itself at every decoding step; on a CPU
    with little memory bandwidth that copy can cost more than the layer's arithmetic. Here the
    cache lives in a buffer with spare columns, and an append writes only the new ones.
    """
    length = cached.shape[2] if cached.dim() == 4 else 0  # a fresh layer holds an empty 1-d tensor
    extra = new.shape[2]
    if length and cached.shape[:2] == new.shape[:2] and _room_after(cached) >= extra:
        grown = cached.as_strided(
            (*cached.shape[:2], length + extra, cached.shape[3]), cached.stride(), cached.storage_offset()
        )
        grown[:, :, length:] = new
        return grown
    buffer = new.new_empty(*new.shape[:2], length + extra + _RESERVED_COLUMNS, new.shape[3])
    if length:
        buffer[:, :, :length] = cached
    buffer[:, :, length : length + extra] = new
    return buffer[:, :, : length + extra]


def new_cache(model: Any) -> Any:
    """An empty KV cache for ``model`` whose full-attention layers append in place (see :func:`append_columns`)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # transformers without cache layers: plain concatenation
        return cache
    for layer in getattr(cache, "layers", []):
        if type(layer) is DynamicLayer:
            layer.__class__ = _appendable_layer_class()
    return cache


def forward(
    model: Any,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    cache: Any = None,
    logits_to_keep: int = 0,
    output_hidden_states: bool = False,
    inputs_embeds: torch.Tensor | None = None,
) -> Any:
    """One causal-LM forward with an explicit position for every token (left padding safe).

    Pass either ``input_ids`` or ``inputs_embeds`` (the input embeddings of those ids).
    ``attention_mask`` is (B, T) with 1 on real tokens, or a (B, 1, T, T) bool mask of the
    (query, key) pairs that may attend (several sequences packed into one row).
    """
    inputs = {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    if attention_mask.dim() == 4 and attention_mask.dtype == torch.bool and _attention(model) != "sdpa":
        # A (B, 1, Q, K) mask of allowed pairs: SDPA takes it as is, other kernels add it to the scores.
        dtype = next(model.parameters()).dtype
        attention_mask = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device).masked_fill(
            ~attention_mask, torch.finfo(dtype).min
        )
    kwargs: dict[str, Any] = {
        **inputs,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "use_cache": cache is not None,
        "output_hidden_states": output_hidden_states,
    }
    if cache is not None:
        kwargs[_cache_keyword(type(model))] = cache
    if logits_to_keep:
        kwargs["logits_to_keep"] = logits_to_keep
    return model(**kwargs)


@functools.cache
def _appendable_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class AppendableLayer(DynamicLayer):
        """A ``DynamicLayer`` whose update appends into reserved columns (see :func:`append_columns`)."""

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            self.keys = append_columns(self.keys, key_states)
            self.values = append_columns(self.values, value_states)
            return self.keys, self.values

    return AppendableLayer


def _attention(model: Any) -> str:
    return str(getattr(model.config, "_attn_implementation", "sdpa"))


Generators = torch.Generator | Sequence[torch.Generator] | None


def _uniforms(rows: int, generator: Generators, device: torch.device) -> torch.Tensor:
    """(rows, 1) uniform draws; a sequence of generators splits the rows into equal groups, one each."""
    if generator is None:
        return torch.rand(rows, 1, device=device)
    if isinstance(generator, torch.Generator):
        return torch.rand(rows, 1, generator=generator)
    groups = len(generator)
    if groups == 0 or rows % groups:
        raise ValueError(f"{rows} rows cannot be split evenly between {groups} generators")
    return torch.cat([torch.rand(rows // groups, 1, generator=g) for g in generator])


def sample_from_logits(logits: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """Draw one token per row from ``softmax(logits)`` by inverting the CDF.

    Exact like ``torch.multinomial`` but far faster over a large vocabulary on CPU (one
    cumulative sum and a binary search per row). Tokens with zero probability (logits of
    ``-inf``) are never drawn. ``generator`` may be one generator for all rows or a
    sequence of generators, each drawing for an equal, consecutive group of rows (so a
    batch of several seeded requests draws exactly what each request would draw alone).
    """
    cdf = torch.softmax(logits.float(), dim=-1).cumsum(dim=-1)
    uniform = _uniforms(cdf.shape[0], generator, cdf.device)
    uniform = uniform.to(cdf.device).clamp_min(1e-12) * cdf[:, -1:]
    return torch.searchsorted(cdf, uniform).squeeze(-1).clamp(max=cdf.shape[-1] - 1)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class Sample:
    """Tokens drawn by :func:`sample`.

    Attributes:
        tokens: (B, N) sampled ids; positions after a row's end hold ``pad_id``.
        logprobs: (B, N) log-probabilities of the sampled ids under the sampling
            distribution's logits (temperature applied), 0 after the end.
        lengths: (B,) number of tokens generated per row, the end token included.
        finished: (B,) whether the row emitted an end token within the budget.
    """

    tokens: torch.Tensor
    logprobs: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor


@torch.no_grad()
def sample(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    end_ids: Sequence[int],
    pad_id: int,
    generator: Generators = None,
    temperature: float = 1.0,
    greedy: torch.Tensor | None = None,
    repeats: int = 1,
) -> Sample:
    """Batched, KV-cached generation from left-padded prompts.

    Args:
        model: A Hugging Face causal LM.
        input_ids: (B, T) left-padded prompt ids.
        attention_mask: (B, T) 1 for real tokens.
        max_new_tokens: Token budget per row.
        end_ids: Ids that end a row (kept in the output, counted in ``lengths``).
        pad_id: Filler after a row's end.
        generator: Seeded generator for sampling (CPU), or one generator per equal,
            consecutive group of rows.
        temperature: Softmax temperature for sampled rows.
        greedy: (B * repeats,) bool; rows that take the arg-max instead of sampling.
        repeats: Rows generated per prompt: each prompt is read once and its KV cache
            repeated, so K replies to one prompt cost one prefill, not K. Output row
            ``i * repeats + j`` is reply ``j`` to prompt ``i``.

    Returns:
        A :class:`Sample`.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    batch, device = input_ids.shape[0] * repeats, input_ids.device
    greedy = torch.zeros(batch, dtype=torch.bool) if greedy is None else greedy.to(torch.bool).cpu()
    end = torch.tensor(sorted(set(end_ids)), dtype=torch.long, device=device)
    cache = new_cache(model)
    mask = attention_mask.long()
    positions = positions_from_mask(mask)
    step_logits = forward(model, input_ids, mask, positions, cache=cache, logits_to_keep=1).logits[:, -1, :]
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
        mask = mask.repeat_interleave(repeats, 0)
        positions = positions.repeat_interleave(repeats, 0)
        step_logits = step_logits.repeat_interleave(repeats, 0)
    next_position = positions[:, -1:] + 1
    tokens = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long)
    logprobs = torch.zeros(batch, max_new_tokens)
    done = torch.zeros(batch, dtype=torch.bool)
    lengths = torch.zeros(batch, dtype=torch.long)
    for step in range(max_new_tokens):
        logits = step_logits.float().cpu() / max(temperature, 1e-6)
        log_probs = torch.log_softmax(logits, dim=-1)
        drawn = sample_from_logits(log_probs, generator)
        chosen = torch.where(greedy, log_probs.argmax(-1), drawn)
        chosen = torch.where(done, torch.full_like(chosen, pad_id), chosen)
        tokens[:, step] = chosen
        logprobs[:, step] = torch.where(done, 0.0, log_probs.gather(-1, chosen[:, None]).squeeze(-1))
        lengths += (~done).long()
        done |= torch.isin(chosen, end.cpu())
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones(batch, 1, dtype=torch.long, device=device)], dim=1)
        out = forward(model, chosen[:, None].to(device), mask, next_position, cache=cache, logits_to_keep=1)
        step_logits = out.logits[:, -1, :]
        next_position = next_position + 1
    return Sample(tokens=tokens, logprobs=logprobs, lengths=lengths, finished=done)


class LocalLanguageModel:
    """A Hugging Face causal LM run in this process.

    Args:
        model: A model name for :func:`textgym.models.resolve_model_path`.
        temperature: Sampling temperature of the non-greedy candidates.
    """

    def __init__(self, model: str = "default", temperature: float = 1.0) -> None:
        from textgym.chat import chat_encoder
        from textgym.models import eos_token_ids, load_shared_causal_lm, load_tokenizer, resolve_model_path

        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.name = model
        self.temperature = float(temperature)
        self.tokenizer = load_tokenizer(model)
        self.chat = chat_encoder(model)
        self.model = load_shared_causal_lm(model)
        self.end_ids = eos_token_ids(self.tokenizer, resolve_model_path(model))

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: ids are kept as they are, messages encoded with text as data."""
        prompt = list(prompt)
        if prompt and all(is_integer(token) for token in prompt):
            return [int(token) for token in prompt]
        return self.chat.encode(prompt)

    def propose(self, prompt: Prompt, num_candidates: int, max_new_tokens: int, seed: int) -> list[Completion]:
        """Return the greedy reply followed by ``num_candidates - 1`` sampled ones, in one batch."""
        return self.propose_many([(prompt, num_candidates, max_new_tokens, seed)])[0]

    def propose_many(self, requests: Sequence[ProposalRequest]) -> list[list[Completion]]:
        """Answer several :meth:`propose` requests with one batched, left-padded generation.

        Each prompt is read once (its KV cache serves all K replies). Each request keeps its
        own seeded generator, so it draws the same random numbers as it would alone; its
        replies match a lone call up to float rounding of the padded batch.
        Requests may differ in prompt and seed but must share K and the token budget.
        """
        if not requests:
            return []
        shapes = {(int(k), int(n)) for _, k, n, _ in requests}
        if len(shapes) != 1:
            raise ValueError(f"batched proposals must share num_candidates and max_new_tokens, got {sorted(shapes)}")
        ((num_candidates, max_new_tokens),) = shapes
        if num_candidates < 1 or max_new_tokens < 1:
            raise ValueError(f"num_candidates and max_new_tokens must be >= 1, got {num_candidates}, {max_new_tokens}")
        prompts = [self.prompt_ids(prompt) for prompt, _, _, _ in requests]
        width = max(len(p) for p in prompts)
        pad_id = int(self.tokenizer.pad_token_id)
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
        greedy = torch.zeros(len(prompts) * num_candidates, dtype=torch.bool)
        greedy[::num_candidates] = True
        generators = [torch.Generator().manual_seed(int(seed)) for _, _, _, seed in requests]
        drawn = sample(
            self.model,
            ids,
            mask,
            max_new_tokens=max_new_tokens,
            end_ids=self.end_ids,
            pad_id=pad_id,
            generator=generators,
            temperature=self.temperature,
            greedy=greedy,
            repeats=num_candidates,
        )
        completions = []
        for row, length, finished in zip(drawn.tokens, drawn.lengths.tolist(), drawn.finished.tolist(), strict=True):
            token_ids = row[: length - int(finished)].tolist()
            text = self.chat.decode_reply(token_ids)
            completions.append(Completion(text=text, finished=bool(finished), token_ids=tuple(token_ids)))
        return [completions[i : i + num_candidates] for i in range(0, len(completions), num_candidates)]


ProposalRequest = tuple[Prompt, int, int, int]
"""Arguments of one :meth:`LanguageModel.propose` call: prompt, K, token budget, seed."""


def propose_all(lm: LanguageModel, requests: Sequence[ProposalRequest]) -> list[list[Completion]]:
    """Answer ``requests`` of one K and budget: one ``propose_many`` call where ``lm`` has it, else one by one."""
    batched = getattr(lm, "propose_many", None)
    return batched(requests) if batched else [lm.propose(*request) for request in requests]


class ProposalBatcher:
    """Batch the proposals of several envs stepped at once, one LM call per round.

    Candidate-level envs spend nearly all their time in the LM's proposals, and a CPU
    generates several proposals in one batch much faster than one after another, since the
    weights are read once per token for the whole batch. Give every env this object as
    its ``proposer`` and step them through :meth:`map`: each job runs in its own thread,
    and a :meth:`propose` call waits until every still-running job has either asked for a
    proposal or finished, then all waiting requests go to the LM as one
    :meth:`LocalLanguageModel.propose_many` batch. Outside :meth:`map` it simply proposes.

    A round's requests reach the LM in the order of their jobs in ``items``, whatever order
    the threads asked in: a proposer that answers several requests for one context with one
    set (``baselines.proposal_vec_env.ReusedProposals``) generates it with the first
    request's seed, so the threads' arrival order, which varies with the machine's load,
    would otherwise change the candidates and a seeded run would not repeat itself.

    Args:
        lm: The LM that answers, e.g. a candidate-level env's ``proposer``; one without
            ``propose_many`` answers the requests of a round one by one.
    """

    def __init__(self, lm: LanguageModel) -> None:
        self.lm = lm
        self.batches = 0
        self.requests = 0
        self._lock = threading.Condition()
        self._running = 0
        self._pending: dict[int, ProposalRequest] = {}
        self._job_of: dict[int, int] = {}  # a pending ticket's job: its index in map's items
        self._answers: dict[int, list[Completion] | BaseException] = {}
        self._tickets = 0
        self._thread = threading.local()  # .job: the index of the job this thread runs

    def propose(self, prompt: Prompt, num_candidates: int, max_new_tokens: int, seed: int) -> list[Completion]:
        """Queue one request and return its replies once its batch has run."""
        request = (list(prompt), num_candidates, max_new_tokens, seed)
        with self._lock:
            if self._running == 0:
                return self._answer({-1: request})[-1]
            self._tickets += 1
            ticket = self._tickets
            self._pending[ticket] = request
            self._job_of[ticket] = getattr(self._thread, "job", -1)  # -1: a thread map did not start
            self._flush_if_all_waiting()
            while ticket not in self._answers:
                self._lock.wait()
            answer = self._answers.pop(ticket)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def map(self, job: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """Run ``job(item)`` for every item in its own thread; return the results in order.

        Raises:
            Exception: The first exception a job raised (after all jobs ended).
        """
        items = list(items)
        results: list[Any] = [None] * len(items)
        errors: list[BaseException | None] = [None] * len(items)

        def run(index: int) -> None:
            self._thread.job = index
            try:
                results[index] = job(items[index])
            except BaseException as error:  # re-raised in the caller's thread below
                errors[index] = error
            finally:
                with self._lock:
                    self._running -= 1
                    self._flush_if_all_waiting()

        with self._lock:
            if self._running:
                raise RuntimeError("ProposalBatcher.map is not re-entrant")
            self._running = len(items)
        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(items))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for error in errors:
            if error is not None:
                raise error
        return results

    def _answer(self, requests: dict[int, ProposalRequest]) -> dict[int, list[Completion]]:
        self.batches += 1
        self.requests += len(requests)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for ticket, (_, k, n, _) in requests.items():
            by_shape.setdefault((k, n), []).append(ticket)
        answers: dict[int, list[Completion]] = {}
        for tickets in by_shape.values():
            replies = propose_all(self.lm, [requests[t] for t in tickets])
            answers.update(zip(tickets, replies, strict=True))
        return answers

    def _flush_if_all_waiting(self) -> None:
        # Called with the lock held: every running job is blocked in propose(), so no
        # more requests can join this round.
        if not self._pending or len(self._pending) < self._running:
            return
        # In job order (see the class docstring); a job waits for its answer, so it has one ticket in a round.
        pending = {ticket: self._pending[ticket] for ticket in sorted(self._pending, key=self._job_of.__getitem__)}
        self._pending, self._job_of = {}, {}
        try:
            self._answers.update(self._answer(pending))
        except BaseException as error:
            self._answers.update(dict.fromkeys(pending, error))
        self._lock.notify_all()
