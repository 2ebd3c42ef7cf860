"""A training run's logs: evaluations, warnings and sample generations in TensorBoard and CSV, optionally W&B.

A :class:`RunLogger` writes, for the run directory ``RUN``:

* to TensorBoard, in the run's ``RUN/tb/`` (``RUN/tb/resumed_at_<step>/`` after a resume), the
  directory stable-baselines3 logs its training scalars to: one ``eval/<metric>`` scalar per
  evaluation metric at each evaluation's step (see :func:`evaluation_metrics`), the evaluation's
  sample generations as a markdown table under ``eval/samples``, the training warnings under
  ``train/warnings``, and the config as hyperparameters whose metrics are the ``eval/`` scalars;
* to ``RUN/eval.csv``, one row per evaluation (:data:`LEADING_COLUMNS`, then the other metrics
  in alphabetical order);
* with ``wandb_project``, to a Weights & Biases run that mirrors the TensorBoard logs
  (``sync_tensorboard``) and holds the config.

    tensorboard --logdir RUN/tb
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat, configure

from textgym import files
from textgym.checks import check_integer

EVAL_CSV = "eval.csv"
#: eval.csv's first columns, always present (empty where an evaluator has no such metric, e.g. DQN's perplexity).
LEADING_COLUMNS = (
    "step",
    "tag",
    "episodes",
    "reward_mean",
    "reward_ci95_low",
    "reward_ci95_high",
    "perplexity_mean",
    "perplexity_median",
)
SAMPLES_TAG = "eval/samples"
WARNINGS_TAG = "train/warnings"
WANDB_INSTALL = "pip install textgym[wandb]"
#: Numbers of an evaluation result that describe it rather than measure the policy.
_NOT_METRICS = ("step", "episodes")
#: Characters of one sample's prompt or reply shown in the TensorBoard table (the JSONL file keeps them whole).
_CELL_CHARS = 600


def require_wandb() -> ModuleType:
    """The ``wandb`` module.

    Raises:
        ImportError: wandb is not installed; the message names the extra that installs it.
    """
    try:
        import wandb
    except ImportError as error:
        raise ImportError(
            f"--wandb-project needs the wandb package, which is not installed: {WANDB_INSTALL}"
        ) from error
    return wandb


def evaluation_metrics(result: Mapping[str, Any]) -> dict[str, float | None]:
    """The metrics of an evaluation result, as :mod:`baselines.train` logs them.

    ``reward_ci95`` becomes ``reward_ci95_low`` and ``reward_ci95_high``; every other number is
    a metric (reward mean, perplexity mean and median, the guard metrics' means, DQN's
    ``top_candidate_rate``), except ``step`` and ``episodes``. A metric without a value (None,
    as the perplexity is without a reference model, or not finite) is None.

    >>> evaluation_metrics({"step": 8, "reward_mean": 0.5, "reward_ci95": [0.25, 0.75], "perplexity_mean": None,
    ...                     "deterministic": False, "tag": "final", "rewards": [0.5]})
    {'reward_mean': 0.5, 'reward_ci95_low': 0.25, 'reward_ci95_high': 0.75, 'perplexity_mean': None}
    """
    metrics: dict[str, float | None] = {}
    for key, value in result.items():
        if key == "reward_ci95":
            low, high = value
            metrics["reward_ci95_low"], metrics["reward_ci95_high"] = _number(low), _number(high)
        elif key in _NOT_METRICS or isinstance(value, bool):
            continue
        elif value is None or isinstance(value, numbers.Real):
            metrics[key] = _number(value)
    return metrics


def _number(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def hparam_value(value: Any) -> str | int | float | bool:
    """``value`` as TensorBoard's hyperparameter plugin takes it: a str, int, float or bool (others as JSON text)."""
    if isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, default=str)


def markdown_cell(text: str, limit: int = _CELL_CHARS) -> str:
    """``text`` as one cell of a markdown table: shortened, HTML and markdown escaped, line breaks as ``<br>``."""
    if len(text) > limit:
        text = text[:limit] + "…"
    text = html.escape(text, quote=False)
    for char in "\\`*_[]|":
        text = text.replace(char, "\\" + char)
    return text.replace("\r", "").replace("\n", "<br>")


def samples_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of recorded episodes (:class:`textgym.wrappers.RecordGenerations` records).

    One row per episode: its seed, the prompt messages, the replies and the episode reward.
    """
    lines = ["| seed | prompt | reply | reward |", "|---|---|---|---|"]
    for record in records:
        prompt = record.get("prompt") or []
        if not isinstance(prompt, str):
            prompt = "\n".join(f"{message.get('role')}: {message.get('content')}" for message in prompt)
        reply = "\n".join(record.get("generations") or [])
        reward = record.get("reward")
        shown = f"{reward:.4g}" if isinstance(reward, (int, float)) else ""
        lines.append(f"| {record.get('seed')} | {markdown_cell(prompt)} | {markdown_cell(reply)} | {shown} |")
    return "\n".join(lines)


def _row(step: int, result: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "step": int(step),
        "tag": result.get("tag", ""),
        "episodes": result.get("episodes"),
        **evaluation_metrics(result),
    }


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else value  # repr: the shortest text that reads back exactly


def _columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    extra = sorted({key for row in rows for key in row} - set(LEADING_COLUMNS))
    return [*LEADING_COLUMNS, *extra]


def _csv_lines(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow([_csv_value(row.get(name)) for name in columns])
    return buffer.getvalue()


class RunLogger:
    """Log a training run's evaluations, warnings and sample generations (see the module docstring).

    It owns the run's stable-baselines3 logger (:attr:`sb3_logger`, for ``model.set_logger``):
    the evaluation scalars go through that logger's own TensorBoard writer rather than a second
    writer in a sibling directory, so that TensorBoard shows them as one run with SB3's training
    scalars, on the same step axis; the hyperparameter plugin finds its metrics (the ``eval/``
    scalars) in the same run; and W&B's ``sync_tensorboard`` has one directory to mirror.

    ``eval.csv`` is rewritten from ``history`` when the logger is made (a resumed run's
    evaluations up to its checkpoint: rows written after the checkpoint are dropped, as the
    generations recorded after it are) and each later evaluation is appended as one durable
    line (:class:`textgym.files.AppendOnlyFile`); an evaluation with a metric the file has no
    column for rewrites it atomically with the wider header.

    Args:
        out_dir: The run directory (``eval.csv`` and W&B's files go there).
        config: The run's configuration, logged as hyperparameters and as W&B's config.
        tb_dir: The TensorBoard directory (default ``out_dir/tb``).
        history: Evaluation results already made in this run (each with its ``step``).
        wandb_project: A W&B project to mirror the logs to ("" for none).
        wandb_entity: The W&B entity (user or team) of the project ("" for the default).
        max_samples: Episodes shown in each evaluation's sample table (the lowest seeds, so
            every evaluation shows the same prompts).

    Raises:
        ImportError: ``wandb_project`` is given and wandb is not installed.
        TypeError: ``max_samples`` is not an integer.
        ValueError: ``max_samples`` is below 1, or an entry of ``history`` has no ``step``.
    """

    def __init__(
        self,
        out_dir: str | Path,
        config: Mapping[str, Any],
        tb_dir: str | Path | None = None,
        history: Iterable[Mapping[str, Any]] = (),
        wandb_project: str = "",
        wandb_entity: str = "",
        max_samples: int = 8,
    ) -> None:
        max_samples = check_integer(max_samples, "max_samples", minimum=1)
        history = list(history)
        missing = [index for index, point in enumerate(history) if "step" not in point]
        if missing:
            raise ValueError(
                f"history entries {missing} have no 'step': pass evaluation results as train.py makes them"
            )
        self.out_dir = Path(out_dir)
        self.tb_dir = Path(tb_dir) if tb_dir is not None else self.out_dir / "tb"
        self.config = dict(config)
        self.max_samples = max_samples
        self.csv_path = self.out_dir / EVAL_CSV
        self._wandb: ModuleType | None = None
        self._wandb_run: Any = None
        if wandb_project:
            self._wandb = require_wandb()
            # Before any SummaryWriter exists: the sync patches the writer class, so a writer made
            # earlier would not be mirrored. The root is the run's tb/ (a resumed run logs below
            # it): without one, wandb waits for writers to name one and cannot save the event files.
            root = self.out_dir / "tb"
            self._wandb.tensorboard.patch(root_logdir=str(root if self.tb_dir.is_relative_to(root) else self.tb_dir))
            try:
                self._wandb_run = self._wandb.init(
                    project=wandb_project,
                    entity=wandb_entity or None,
                    name=self.out_dir.name,
                    config=self.config,
                    sync_tensorboard=True,
                    dir=str(self.out_dir),
                )
            except BaseException:
                self._wandb.tensorboard.unpatch()
                raise
        self.sb3_logger: Logger = configure(str(self.tb_dir), ["tensorboard", "csv"])
        self.writer = next(f.writer for f in self.sb3_logger.output_formats if isinstance(f, TensorBoardOutputFormat))
        self._rows = [_row(point["step"], point) for point in history]
        self._columns = _columns(self._rows)
        self._csv: files.AppendOnlyFile | None = None
        self._rewrite_csv()
        self._warnings_logged = 0
        self._hparams_written = False
        self._closed = False

    def _rewrite_csv(self) -> None:
        if self._csv is not None:
            self._csv.close()
        header = _csv_lines([{name: name for name in self._columns}], self._columns)
        files.atomic_write(self.csv_path, header + _csv_lines(self._rows, self._columns))
        self._csv = files.AppendOnlyFile(self.csv_path)

    def evaluation(self, step: int, result: Mapping[str, Any]) -> None:
        """Log one evaluation (an ``evaluate_policy`` or ``evaluate_q_policy`` result) at env step ``step``."""
        metrics = evaluation_metrics(result)
        for key, value in metrics.items():
            if value is not None:
                self.writer.add_scalar(f"eval/{key}", value, step)
        if not self._hparams_written:
            self._write_hparams(metrics)
        self.writer.flush()
        row = _row(step, result)
        self._rows.append(row)
        if set(row) <= set(self._columns):
            assert self._csv is not None
            self._csv.write(_csv_lines([row], self._columns))
        else:
            self._columns = _columns(self._rows)
            self._rewrite_csv()

    def _write_hparams(self, metrics: Mapping[str, float | None]) -> None:
        # Written with the first evaluation, so that a run that dies later still has them. The
        # plugin lists the metric names given here and reads their values from the run's scalars
        # of those tags, latest step first: the final evaluation's once the run has finished.
        from torch.utils.tensorboard.summary import hparams

        config = {key: hparam_value(value) for key, value in self.config.items()}
        metric_dict = {f"eval/{key}": value for key, value in metrics.items() if value is not None}
        for summary in hparams(config, metric_dict):
            self.writer.file_writer.add_summary(summary)
        self._hparams_written = True

    def samples(self, step: int, records: Iterable[Mapping[str, Any]]) -> None:
        """Log an evaluation's recorded episodes as a markdown table (the ``max_samples`` lowest seeds)."""
        chosen = sorted(records, key=lambda record: (record.get("seed") or 0, record.get("episode_index") or 0))
        if chosen:
            self.writer.add_text(SAMPLES_TAG, samples_markdown(chosen[: self.max_samples]), step)
            self.writer.flush()

    def warnings(self, step: int, issued: Sequence[str]) -> None:
        """Log the training warnings of ``issued`` (a list that only grows) that this logger has not logged yet.

        After a resume the first call logs the warnings restored from the checkpoint too: they
        belong to the resumed run's own TensorBoard directory.
        """
        new = list(issued[self._warnings_logged :])
        self._warnings_logged = len(issued)
        if new:
            self.writer.add_text(WARNINGS_TAG, "\n".join(f"- {markdown_cell(text)}" for text in new), step)
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the logs (the SB3 logger's too) and finish the W&B run (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._csv is not None:
            self._csv.close()
        self.sb3_logger.close()
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb.tensorboard.unpatch()  # the next run's logger patches again, with its own root

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
