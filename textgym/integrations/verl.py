r"""Train on any textgym task with verl: the ``textgym_agent`` agent loop, ``compute_score`` and a dataset exporter.

* :data:`TextgymAgentLoop` (needs ``verl``): an ``AgentLoopBase`` registered as
  ``textgym_agent`` that plays one episode per dataset row, turn by turn. The policy's
  reply tokens go into the trajectory with loss mask 1 and their log-probs; what the task
  says follows a reply (the next user turn of a Dialogue, with the template's end of turn
  and generation prompt) goes in with mask 0; the episode's reward lands on the last token
  (``reward_score``), and the per-turn rewards and guard metrics go in ``extra_fields``.
* :func:`compute_score`: verl's custom reward function signature, for single-turn tasks
  run by another agent loop (e.g. ``single_turn_agent``).
* :func:`export_dataset`: parquet rows in verl's shape (``data_source``, ``prompt``,
  ``agent_name``, ``reward_model``, ``extra_info``); ``extra_info["textgym_spec"]`` holds
  the :class:`textgym.integrations.EpisodeSpec` JSON a worker rebuilds the task from.

Every reply is decoded as :class:`textgym.text_env.TextEnv` decodes it
(``tokenizer.decode(ids, skip_special_tokens=True).strip()``) and played through
:class:`textgym.core.TextEpisode`, so rewards and episode ends equal TextEnv's for the same
reply texts. Messages become ids through :class:`textgym.chat.ChatEncoder`, not verl's
``apply_chat_template(tokenize=True)``: a ``<|im_end|>`` inside a dataset utterance stays
ordinary text rather than closing the turn.

Only the agent loop needs verl; the exporter and ``compute_score`` run wherever textgym
(and pandas, for parquet) is installed::

    python -m textgym.integrations.verl TextGym/DialogueUtterance-v0 --out ~/data/textgym_dialogue
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import uuid4

from textgym.chat import ChatEncoder
from textgym.core import Message
from textgym.integrations import EpisodeSpec, prompt_rows, require_engine

#: The agent loop's name in verl's registry and in each row's ``agent_name``.
AGENT_NAME = "textgym_agent"
#: The class path verl's config names the loop by (``python -m`` runs this module as ``__main__``).
AGENT_LOOP_TARGET = "textgym.integrations.verl.TextgymAgentLoop"
#: The ``extra_info`` key holding a row's :class:`~textgym.integrations.EpisodeSpec` JSON.
SPEC_KEY = "textgym_spec"
#: The guard metrics (see :func:`textgym.core.guard_metrics`) reported per episode as scalars.
_GUARD_SCALARS = ("reply_words", "distinct_1", "distinct_2", "repetition_2", "empty_replies", "unfinished_replies")


# -- dataset rows -------------------------------------------------------------------------


def row_spec(data_source: Any, extra_info: Any, ground_truth: Any) -> EpisodeSpec:
    """The episode a verl row stands for, checked against the row's other columns.

    Args:
        data_source: The row's ``data_source``: the spec's env id.
        extra_info: The row's ``extra_info``, holding the spec JSON under :data:`SPEC_KEY`
            (other keys, e.g. those verl's reward manager adds, are ignored).
        ground_truth: The row's ``reward_model["ground_truth"]``: the spec's prompt id (the
            task looks its reference up by prompt id; the reference never leaves the task).

    Raises:
        ValueError: No spec, a malformed spec or one from an incompatible textgym, an
            unknown env id or task argument, or columns that disagree with the spec.
    """
    if not isinstance(extra_info, Mapping) or SPEC_KEY not in extra_info:
        raise ValueError(
            f"a textgym row carries its episode spec in extra_info[{SPEC_KEY!r}], got extra_info "
            f"{extra_info!r:.120}; write rows with textgym.integrations.verl.export_dataset"
        )
    spec = EpisodeSpec.from_json(extra_info[SPEC_KEY])
    if data_source != spec.env_id:
        raise ValueError(f"row data_source {data_source!r} differs from its spec's env id {spec.env_id!r}")
    if ground_truth != spec.prompt_id:
        raise ValueError(f"row ground_truth {ground_truth!r} differs from its spec's prompt id {spec.prompt_id!r}")
    return spec


def dataset_rows(env_id: str, split: str, n: int | None = None, **task_options: Any) -> list[dict[str, Any]]:
    """Dataset rows in verl's shape for a split's prompts (the first ``n``), in the data's order.

    Each row: ``data_source`` (the env id), ``prompt`` (the chat messages),
    ``agent_name`` (``"textgym_agent"``), ``reward_model`` (``{"style": "rule",
    "ground_truth": prompt_id}``) and ``extra_info`` (``index``, ``split``, ``prompt_id``
    and the spec JSON under ``"textgym_spec"``).

    Args:
        env_id: A registered TextGym id (any granularity of a task gives the same rows).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        n: How many prompts; required for tasks that generate prompts without end.
        **task_options: Task arguments that differ from the id's registered ones.

    Raises:
        ValueError: An unknown env id, split or task argument, or a bad ``n``.
    """
    rows = []
    for index, (prompt_id, messages) in enumerate(prompt_rows(env_id, split, n, **task_options)):
        spec = EpisodeSpec(env_id, prompt_id, split, dict(task_options))
        rows.append(
            {
                "data_source": env_id,
                "prompt": messages,
                "agent_name": AGENT_NAME,
                "reward_model": {"style": "rule", "ground_truth": prompt_id},
                "extra_info": {"index": index, "split": split, "prompt_id": prompt_id, SPEC_KEY: spec.to_json()},
            }
        )
    return rows


def export_dataset(
    env_id: str, split: str, path: str | os.PathLike[str], n: int | None = None, **task_options: Any
) -> Path:
    """Write :func:`dataset_rows` to a parquet file verl's ``RLHFDataset`` reads; return its path.

    Raises:
        ValueError: ``path`` does not end in ``.parquet`` (verl picks the reader by suffix),
            or :func:`dataset_rows` rejects an argument.
    """
    import pandas as pd

    path = Path(path).expanduser()
    if path.suffix != ".parquet":
        raise ValueError(f"path must end in .parquet (verl picks its reader by the suffix), got {str(path)!r}")
    rows = dataset_rows(env_id, split, n, **task_options)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    pd.DataFrame(rows).to_parquet(partial, index=False)
    os.replace(partial, path)
    return path


def write_agent_loop_config(path: str | os.PathLike[str]) -> Path:
    """Write the file for verl's ``actor_rollout_ref.rollout.agent.agent_loop_config_path``; return its path.

    verl's rollout workers are separate processes: they learn ``textgym_agent`` from this
    file (name and class path), not from an import in the driver.
    """
    import yaml

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump([{"name": AGENT_NAME, "_target_": AGENT_LOOP_TARGET}]))
    return path


# -- reward ---------------------------------------------------------------------------------


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: Mapping[str, Any] | None = None, **kwargs: Any
) -> float:
    """The reward of one reply to a single-turn task's row, in verl's custom reward function signature.

    ``solution_str`` is stripped, as :class:`textgym.text_env.TextEnv` strips a decoded reply,
    and played as the episode's only reply. Extra keyword arguments from verl's reward
    managers are ignored.

    Raises:
        TypeError: ``solution_str`` is not a string.
        ValueError: A malformed row (see :func:`row_spec`), a prompt id not in the split, or
            a multi-turn task: score those with the ``textgym_agent`` loop, which plays
            every turn.
    """
    spec = row_spec(data_source, extra_info, ground_truth)
    if not isinstance(solution_str, str):
        raise TypeError(f"solution_str must be a str, got {type(solution_str).__name__}: {solution_str!r:.80}")
    episode = spec.start()
    episode.step(solution_str.strip())
    if episode.state != "over":
        raise ValueError(
            f"{spec.env_id} prompt {spec.prompt_id!r} goes on after one reply; compute_score scores single-turn "
            f"tasks: give its rows agent_name {AGENT_NAME!r}, whose loop plays and scores every turn"
        )
    return episode.total_reward


# -- token building ---------------------------------------------------------------------------


def _text_message(message: Mapping[str, Any], index: int) -> Message:
    content = message.get("content")
    if not isinstance(content, str):
        raise TypeError(f"message {index} has non-text content {content!r:.80}; textgym tasks are text only")
    return {"role": message["role"], "content": content}


class _TextAsDataTokens:
    """How the textgym loop turns messages into ids, mixed over the builder class verl picked.

    verl's builders render with ``apply_chat_template(tokenize=True)``, which reads
    special-token strings inside message text as control tokens. Here messages are encoded
    by :class:`~textgym.chat.ChatEncoder` (text as data), and the ids that follow a reply
    are the template's end of turn, the next messages and the generation prompt
    (``ChatEncoder.continuation``), as :class:`~textgym.text_env.TextEnv` appends them. verl's
    merge records (which ids are the policy's, which the env's) are kept, so its mask and
    log-prob alignment applies unchanged.
    """

    chat: ChatEncoder

    def _render_tokens(
        self, messages: list[dict[str, Any]], *, add_generation_prompt: bool, tools: list[dict] | None = None
    ) -> list[int]:
        if tools:
            raise ValueError(f"textgym tasks use no tools, got {len(tools)} tool schemas")
        return self.chat.encode([_text_message(m, i) for i, m in enumerate(messages)], add_generation_prompt)

    def merge_context_tokens(
        self,
        previous_messages: list[dict[str, Any]],
        updated_messages: list[dict[str, Any]],
        runtime_token_ids: list[int],
        *,
        tools: list[dict] | None = None,
    ) -> Any:
        if not self.chat.appendable:
            # The template rewrites earlier turns, so no rendering of the whole conversation
            # extends the ids; verl renders each new message after a fixed stand-in prefix.
            return super().merge_context_tokens(previous_messages, updated_messages, runtime_token_ids, tools=tools)
        from verl.utils.tokenizer.continuous_token import MergeResult

        if not previous_messages or previous_messages[-1].get("role") != "assistant":
            raise ValueError("the textgym loop appends the env's messages only after an assistant reply")
        answered = [_text_message(m, i) for i, m in enumerate(previous_messages[:-1])]
        following = [_text_message(m, i) for i, m in enumerate(updated_messages[len(previous_messages) :])]
        ids = self.chat.continuation(answered, following)
        # The reply ends with the end token the policy stopped at; when the template's end
        # of turn starts with that token, the policy's copy stands for it.
        if runtime_token_ids and ids and runtime_token_ids[-1] == ids[0]:
            ids = ids[1:]
        return MergeResult(token_ids=[*runtime_token_ids, *ids], appended_token_count=len(ids), kind="context")


@functools.cache
def _text_as_data_class(base: type) -> type:
    return type(f"TextAsData{base.__name__}", (_TextAsDataTokens, base), {"__module__": __name__})


def _text_as_data(builder: Any, chat: ChatEncoder) -> Any:
    # verl picks the builder class by model family; keep it (its boundary rules serve the
    # fallback for templates that rewrite earlier turns) and change how messages become ids.
    builder.__class__ = _text_as_data_class(type(builder))
    builder.chat = chat
    return builder


@functools.lru_cache(maxsize=8)
def _chat_encoder(tokenizer: Any) -> ChatEncoder:
    return ChatEncoder(tokenizer)


@functools.lru_cache(maxsize=8)
def _end_ids(tokenizer: Any) -> frozenset[int]:
    from textgym.models import eos_token_ids

    # The ids TextEnv ends a reply at: the tokenizer's EOS and, for a local model directory,
    # its generation config's.
    return frozenset(eos_token_ids(tokenizer, getattr(tokenizer, "name_or_path", None)))


# -- the agent loop -------------------------------------------------------------------------


class _TextgymLoop:
    """Play one textgym episode per dataset row through verl's continuous-token helpers.

    The row's ``extra_info["textgym_spec"]`` names the task and prompt (the task is built
    once per worker and copied per episode). Each turn the server generates a reply from
    the ids so far, at most the ``response_length`` tokens left; its ids join the
    trajectory with mask 1 and their log-probs; its text, decoded as ``TextEnv`` decodes
    it, is the task's step; unless the task is over, the task's next messages join with
    mask 0. The episode ends when the task is over or ``response_length`` is reached: a
    reply cut by it is scored unfinished, and next messages that do not fit end the
    episode after the last reply. A reply without an end token that leaves room (a
    server-side stop) is scored unfinished and the template's whole end of turn follows it.

    Output: ``reward_score`` is the episode's total reward (verl puts it on the last
    response token); ``num_turns`` counts the prompt, each reply and each env message;
    ``extra_fields`` holds ``turn_scores`` (each reply's reward), ``reward_extra_info``
    (``score`` and the scalar guard metrics, which verl logs per data source) and
    ``textgym`` (env id, prompt id, end reason, reply texts and the full guard metrics).

    Raises:
        ValueError: ``data.apply_chat_template_kwargs`` is set (textgym renders the template
            without them), or a malformed row (see :func:`row_spec`), a prompt id not in
            the split, or a row whose ``prompt`` differs from the task's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.apply_chat_template_kwargs:
            raise ValueError(
                "textgym_agent renders the chat template as textgym.chat.ChatEncoder does, without "
                f"data.apply_chat_template_kwargs; unset them, got {dict(self.apply_chat_template_kwargs)!r}"
            )
        self.chat = _chat_encoder(self.tokenizer)
        self.continuous_token_builder = _text_as_data(self.continuous_token_builder, self.chat)
        self.end_ids = _end_ids(self.tokenizer)
        self.response_length = int(self.rollout_config.response_length)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> Any:
        """Play the row's episode; return verl's ``AgentLoopOutput``."""
        from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
        from verl.utils.profiler import simple_timer

        reward_model = kwargs.get("reward_model")
        ground_truth = reward_model.get("ground_truth") if isinstance(reward_model, Mapping) else None
        spec = row_spec(kwargs.get("data_source"), kwargs.get("extra_info"), ground_truth)
        episode = spec.start()
        if "raw_prompt" in kwargs and _messages(kwargs["raw_prompt"]) != episode.prompt.messages:
            raise ValueError(
                f"{spec.env_id} prompt {spec.prompt_id!r}: the row's prompt differs from the task's; "
                "export the dataset again with the installed textgym"
            )
        priority = int(kwargs.get("priority", 0))
        request_id = f"det-{priority}" if getattr(self.rollout_config, "full_determinism", False) else uuid4().hex
        metrics: dict[str, Any] = {"num_preempted": -1}
        extra_fields: dict[str, Any] = {}

        ids = await self.ct_build_initial_tokens(list(episode.messages))
        mask: list[int] = []
        logprobs: list[float] | None = None
        num_turns = 1
        while True:
            budget = self.response_length - len(mask)
            with simple_timer("generate_sequences", metrics):
                output = await self.server_manager.generate(
                    request_id=request_id,
                    prompt_ids=ids,
                    sampling_params={**sampling_params, "max_tokens": budget},
                    priority=priority,
                )
            if output.num_preempted is not None:
                metrics["num_preempted"] = max(metrics["num_preempted"], 0) + output.num_preempted
            _merge_server_fields(extra_fields, output.extra_fields)
            # A server that ignores max_tokens is cut here: the reward is for the ids trained on.
            reply_ids = list(output.token_ids[:budget])
            reply_logprobs = list(output.log_probs[:budget]) if output.log_probs else None
            if not mask and reply_logprobs is not None:
                logprobs = []
            merged, mask, logprobs = await self.ct_merge_assistant_token(
                ids, reply_ids, mask, logprobs, assistant_logprobs=reply_logprobs if logprobs is not None else None
            )
            ids = merged.token_ids
            num_turns += 1

            ends = [i for i, token in enumerate(reply_ids) if token in self.end_ids]
            text = self.chat.decode_reply(reply_ids[: ends[0]] if ends else reply_ids)
            answered = len(episode.messages) + 1  # the conversation up to and with this reply
            result = episode.step(text, finished=bool(ends))
            if result.terminated:
                break
            # A reply cut by the budget fills it; one the server cut sooner (no end token,
            # room left) is scored unfinished and the conversation goes on, as in TextEnv.
            if len(mask) >= self.response_length:
                episode.end("response_length")
                break
            merged, next_mask, next_logprobs = await self.ct_merge_context_msg(
                episode.messages[:answered], list(episode.messages), ids, mask, logprobs
            )
            if len(next_mask) >= self.response_length:
                episode.end("response_length")
                break
            ids, mask, logprobs = merged.token_ids, next_mask, next_logprobs
            num_turns += len(result.next_messages)

        guard = episode.guard()
        extra_fields["turn_scores"] = list(episode.rewards)
        extra_fields["tool_rewards"] = []
        extra_fields["reward_extra_info"] = {
            "score": episode.total_reward,
            **{name: float(guard[name]) for name in _GUARD_SCALARS},
        }
        extra_fields["textgym"] = {
            "env_id": spec.env_id,
            "prompt_id": spec.prompt_id,
            "end_reason": episode.end_reason,
            "replies": [text for text, _, _ in episode.replies],
            "guard": guard,
        }
        split = len(ids) - len(mask)
        return AgentLoopOutput(
            prompt_ids=ids[:split],
            response_ids=ids[split:],
            response_mask=mask,
            response_logprobs=logprobs,
            reward_score=episode.total_reward,
            num_turns=num_turns,
            metrics=metrics,
            extra_fields=extra_fields,
        )


def _messages(raw_prompt: Any) -> list[Message]:
    try:
        return [_text_message(message, index) for index, message in enumerate(raw_prompt)]
    except (AttributeError, KeyError, TypeError) as error:
        raise ValueError(f"a row's prompt must be a list of chat messages ({error}): {raw_prompt!r:.120}") from error


def _merge_server_fields(extra_fields: dict[str, Any], server_fields: Mapping[str, Any]) -> None:
    # The first turn's server fields stand for the trajectory; later turns can only move the
    # newest weight version it was generated with (what asynchronous trainers check).
    if not extra_fields:
        extra_fields.update(server_fields)
    elif server_fields.get("max_global_steps") is not None:
        extra_fields["max_global_steps"] = server_fields["max_global_steps"]


@functools.cache
def agent_loop_class() -> type:
    """The ``textgym_agent`` agent loop class, built over verl's ``AgentLoopBase`` and registered on first use.

    Raises:
        textgym.integrations.EngineVersionError: verl is missing or outside the supported range.
    """
    require_engine("verl")
    from verl.experimental.agent_loop.agent_loop import AgentLoopBase, register
    from verl.utils.rollout_trace import rollout_trace_op

    namespace = {"__module__": __name__, "__doc__": _TextgymLoop.__doc__, "run": rollout_trace_op(_TextgymLoop.run)}
    return register(AGENT_NAME)(type("TextgymAgentLoop", (_TextgymLoop, AgentLoopBase), namespace))


def __getattr__(name: str) -> Any:
    # ``TextgymAgentLoop`` is built on first access, so the exporter and compute_score
    # import without verl; verl's config names it by this module path.
    if name == "TextgymAgentLoop":
        return agent_loop_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Export a task's splits as verl parquet files plus the agent loop config; return the paths written."""
    parser = argparse.ArgumentParser(description="Export a textgym task as verl dataset rows (parquet).")
    parser.add_argument("env_id", help="a registered TextGym id, e.g. TextGym/DialogueUtterance-v0")
    parser.add_argument("--out", required=True, help="directory for SPLIT.parquet and agent_loop.yaml")
    parser.add_argument("--splits", nargs="+", default=["train", "validation"], help="splits to export")
    parser.add_argument("--n", type=int, default=None, help="prompts per split (required for generated tasks)")
    args = parser.parse_args(argv)
    out = Path(args.out).expanduser()
    written = [export_dataset(args.env_id, split, out / f"{split}.parquet", args.n) for split in args.splits]
    written.append(write_agent_loop_config(out / "agent_loop.yaml"))
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
