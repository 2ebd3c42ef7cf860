"""Drive the textgym verl agent loop on CPU: a scripted stand-in for verl's server manager and a runner.

verl's own CPU tests of agent loops replace the LLM server manager with an object whose
``async generate(request_id, *, prompt_ids, sampling_params, ...)`` returns a
``TokenOutput``; :class:`ScriptedServer` is one whose replies are given as texts. verl is
imported inside the functions: pytest imports this module (for doctests) in environments
without verl.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from textgym.chat import ChatEncoder


def scripted_logprob(turn: int, position: int) -> float:
    """The log-prob :class:`ScriptedServer` reports for token ``position`` of reply ``turn`` (distinct per token)."""
    return -(turn + 1) - position / 1000


class ScriptedServer:
    """A stand-in for verl's LLM server manager that gives scripted replies, in order.

    Args:
        tokenizer: The policy's tokenizer.
        replies: Each reply as text (its ids as data, then the tokenizer's EOS, as a policy
            that finished the reply would produce) or as a list of token ids, taken as is.
        honour_max_tokens: Cut a reply at ``sampling_params["max_tokens"]`` as real servers
            do; False plays a server that ignores the limit.

    Attributes:
        calls: ``{"request_id", "prompt_ids", "sampling_params"}`` of each generate call.
    """

    def __init__(self, tokenizer: Any, replies: Sequence[str | Sequence[int]], honour_max_tokens: bool = True) -> None:
        chat = ChatEncoder(tokenizer)
        self.replies = [
            chat.encode_text(reply) + [tokenizer.eos_token_id] if isinstance(reply, str) else list(reply)
            for reply in replies
        ]
        self.honour_max_tokens = honour_max_tokens
        self.calls: list[dict[str, Any]] = []

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **kwargs: Any):
        """Return the next scripted reply as a ``TokenOutput`` with :func:`scripted_logprob` log-probs."""
        from verl.workers.rollout.replica import TokenOutput

        await asyncio.sleep(0)  # other episodes run while this one waits, as with a real server
        turn = len(self.calls)
        self.calls.append(
            {"request_id": request_id, "prompt_ids": list(prompt_ids), "sampling_params": dict(sampling_params)}
        )
        if turn >= len(self.replies):
            raise AssertionError(f"the loop asked for reply {turn}, but {len(self.replies)} are scripted")
        ids = self.replies[turn]
        if self.honour_max_tokens:
            ids = ids[: sampling_params["max_tokens"]]
        log_probs = [scripted_logprob(turn, position) for position in range(len(ids))]
        return TokenOutput(token_ids=ids, log_probs=log_probs, stop_reason="completed", num_preempted=0)


def loop_config(prompt_length: int = 1024, response_length: int = 512, **data: Any) -> Any:
    """The smallest verl config an agent loop reads (rollout lengths, data options)."""
    from omegaconf import OmegaConf

    rollout = {"prompt_length": prompt_length, "response_length": response_length, "calculate_log_probs": True}
    return OmegaConf.create(
        {"actor_rollout_ref": {"rollout": rollout, "model": {}}, "data": {"apply_chat_template_kwargs": {}, **data}}
    )


def make_loop(server: Any, tokenizer: Any, config: Any, hf_model_type: str | None = None) -> Any:
    """A ``TextgymAgentLoop`` as verl's worker builds one (call inside a running event loop)."""
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from textgym.integrations.verl import TextgymAgentLoop

    return TextgymAgentLoop(
        trainer_config=DictConfigWrap(config),
        server_manager=server,
        tokenizer=tokenizer,
        processor=None,
        dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(config.data),
        hf_model_type=hf_model_type,
    )


def loop_kwargs(row: Mapping[str, Any]) -> dict[str, Any]:
    """What verl's worker passes a loop for a row of :func:`textgym.integrations.verl.dataset_rows`.

    ``RLHFDataset`` turns the ``prompt`` column into ``raw_prompt`` and adds ``index``; the
    worker takes ``agent_name`` to pick the loop and passes the other columns.
    """
    kwargs = {key: value for key, value in row.items() if key not in ("prompt", "agent_name")}
    return {**kwargs, "raw_prompt": list(row["prompt"]), "index": row["extra_info"].get("index", 0)}


async def run_row(
    row: Mapping[str, Any], server: Any, tokenizer: Any, prompt_length: int = 1024, response_length: int = 512
) -> Any:
    """Play one dataset row through the loop with ``server``; return its ``AgentLoopOutput``."""
    loop = make_loop(server, tokenizer, loop_config(prompt_length, response_length))
    return await loop.run({"temperature": 1.0, "top_p": 1.0, "logprobs": True}, **loop_kwargs(row))


def play_row(row: Mapping[str, Any], replies: Sequence[str | Sequence[int]], tokenizer: Any, **lengths: int):
    """Play ``row`` with scripted ``replies``; return the ``AgentLoopOutput`` and the server (its calls)."""
    server = ScriptedServer(tokenizer, replies)
    return asyncio.run(run_row(row, server, tokenizer, **lengths)), server
