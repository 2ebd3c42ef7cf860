"""Run logging (baselines.common.run_logging): TensorBoard scalars, text and hparams, eval.csv, the W&B option."""

import csv
import json
import sys
import types

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tiny_runs import TINY_RUN

from baselines.common.run_logging import (
    EVAL_CSV,
    LEADING_COLUMNS,
    SAMPLES_TAG,
    WARNINGS_TAG,
    RunLogger,
    evaluation_metrics,
    markdown_cell,
)

METRICS = ("reward_mean", "reward_ci95_low", "reward_ci95_high", "perplexity_mean", "perplexity_median")
GUARDS = ("reply_words_mean", "distinct_2_mean")


def read_events(tb_dir):
    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def scalars(events, tag):
    return {event.step: event.value for event in events.Scalars(tag)}


def texts(events, tag):
    return {event.step: event.tensor_proto.string_val[0].decode() for event in events.Tensors(f"{tag}/text_summary")}


def hparams(events):
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    values = {}
    for name, value in start.session_start_info.hparams.items():
        values[name] = getattr(value, value.WhichOneof("kind"))
    return values, [info.name.tag for info in experiment.experiment.metric_infos]


def read_csv(path):
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def fake_evaluation(step, reward, perplexity=None, **extra):
    return {
        "episodes": 2,
        "deterministic": False,
        "reward_mean": reward,
        "reward_ci95": (reward - 0.25, reward + 0.5),
        "rewards": [reward, reward],
        "perplexity_mean": perplexity,
        "perplexity_median": None if perplexity is None else perplexity / 2,
        "reply_words_mean": 3.5,
        "distinct_2_mean": 0.75,
        "tag": f"step{step}",
        "step": step,
        **extra,
    }


def test_evaluation_metrics_split_the_interval_and_drop_what_is_not_a_metric():
    metrics = evaluation_metrics(
        {**fake_evaluation(8, np.float64(0.5), perplexity=float("nan")), "top_candidate_rate": np.float32(0.25)}
    )
    assert metrics == {
        "reward_mean": 0.5,
        "reward_ci95_low": 0.25,
        "reward_ci95_high": 1.0,
        "perplexity_mean": None,  # not finite: no value
        "perplexity_median": None,
        "reply_words_mean": 3.5,
        "distinct_2_mean": 0.75,
        "top_candidate_rate": 0.25,
    }
    assert all(type(value) is float for value in metrics.values() if value is not None)


def test_run_logger_writes_scalars_text_hparams_and_csv(tmp_path):
    config = {"seed": 3, "model": "tiny", "bf16": False, "learning_rate": 2e-5, "layers": [1, 2], "note": None}
    first, second = fake_evaluation(0, 0.125, perplexity=40.5), fake_evaluation(16, 0.625, perplexity=20.25)
    records = [
        {"seed": 10_001, "prompt": [{"role": "user", "content": "second prompt"}], "generations": ["b|c"], "reward": 2},
        {"seed": 10_000, "prompt": [{"role": "user", "content": "first\nprompt"}], "generations": ["a*"], "reward": 1},
    ]
    with RunLogger(tmp_path, config, max_samples=1) as log:
        log.evaluation(0, first)
        log.samples(0, records)
        log.warnings(8, ["rewards tie"])
        log.warnings(12, ["rewards tie"])  # nothing new
        log.warnings(16, ["rewards tie", "length | collapse"])
        log.evaluation(16, second)
    events = read_events(tmp_path / "tb")
    for key in (*METRICS, *GUARDS):
        assert scalars(events, f"eval/{key}") == pytest.approx(
            {0: evaluation_metrics(first)[key], 16: evaluation_metrics(second)[key]}
        )
    samples = texts(events, SAMPLES_TAG)
    assert list(samples) == [0]
    assert "| 10000 | user: first<br>prompt | a\\* | 1 |" in samples[0] and "second prompt" not in samples[0]
    assert texts(events, WARNINGS_TAG) == {8: "- rewards tie", 16: f"- {markdown_cell('length | collapse')}"}
    values, metric_tags = hparams(events)
    assert values == {
        "seed": 3,
        "model": "tiny",
        "bf16": 0,
        "learning_rate": pytest.approx(2e-5),
        "layers": "[1, 2]",
        "note": "null",
    }
    assert metric_tags == [f"eval/{key}" for key in (*METRICS, *GUARDS)]

    rows = read_csv(tmp_path / EVAL_CSV)
    assert list(rows[0]) == [*LEADING_COLUMNS, "distinct_2_mean", "reply_words_mean"]
    assert [row["tag"] for row in rows] == ["step0", "step16"] and [row["step"] for row in rows] == ["0", "16"]
    assert float(rows[1]["reward_ci95_high"]) == 1.125 and float(rows[1]["perplexity_median"]) == 10.125


def test_csv_is_rewritten_from_the_history_and_widened_for_a_new_metric(tmp_path):
    with RunLogger(tmp_path, {}) as log:
        log.evaluation(0, fake_evaluation(0, 0.5))
        log.evaluation(8, fake_evaluation(8, 0.75))  # written after the checkpoint a resume goes back to
    # A resume passes the evaluations up to its checkpoint: the later row goes.
    with RunLogger(tmp_path, {}, tmp_path / "tb" / "resumed_at_4", history=[fake_evaluation(0, 0.5)]) as log:
        assert [row["step"] for row in read_csv(tmp_path / EVAL_CSV)] == ["0"]
        log.evaluation(12, fake_evaluation(12, 1.0, top_candidate_rate=0.5))
    rows = read_csv(tmp_path / EVAL_CSV)
    assert [row["step"] for row in rows] == ["0", "12"]
    assert rows[0]["top_candidate_rate"] == "" and rows[1]["top_candidate_rate"] == "0.5"
    assert rows[0]["perplexity_mean"] == "" and float(rows[1]["reward_mean"]) == 1.0
    assert scalars(read_events(tmp_path / "tb" / "resumed_at_4"), "eval/top_candidate_rate") == {12: 0.5}


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="max_samples must be an integer >= 1, got 0"):
        RunLogger(tmp_path, {}, max_samples=0)
    with pytest.raises(ValueError, match=r"history entries \[1\] have no 'step'"):
        RunLogger(tmp_path, {}, history=[fake_evaluation(0, 0.5), {"reward_mean": 1.0}])
    assert not (tmp_path / "tb").exists() and not (tmp_path / EVAL_CSV).exists()


def test_missing_wandb_is_a_clear_error_before_training(tmp_path, monkeypatch, capsys):
    from baselines.train import parse_args

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(ImportError, match=r"pip install textgym\[wandb\]"):
        RunLogger(tmp_path, {}, wandb_project="textgym")
    assert not (tmp_path / "tb").exists()
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--model", "tiny", "--wandb-project", "textgym"])
    assert exit_info.value.code == 2 and "pip install textgym[wandb]" in capsys.readouterr().err
    assert parse_args(["--model", "tiny"]).wandb_project == ""


def fake_wandb(calls, tmp_path, fail=False):
    def init(**kwargs):
        # The sync only mirrors writers made after the patch.
        calls.append({**kwargs, "event_files_then": list(tmp_path.rglob("events.out.tfevents*"))})
        if fail:
            raise RuntimeError("wandb.init failed")
        return types.SimpleNamespace(finish=lambda: calls.append("finish"))

    tensorboard = types.SimpleNamespace(
        patch=lambda **kwargs: calls.append(("patch", kwargs)), unpatch=lambda: calls.append("unpatch")
    )
    return types.SimpleNamespace(init=init, tensorboard=tensorboard)


def test_wandb_run_is_started_before_the_tensorboard_writer_and_finished(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(calls, tmp_path))
    log = RunLogger(tmp_path / "run", {"seed": 1}, wandb_project="textgym", wandb_entity="team")
    log.close()
    log.close()
    init = {
        "project": "textgym",
        "entity": "team",
        "name": "run",
        "config": {"seed": 1},
        "sync_tensorboard": True,
        "dir": str(tmp_path / "run"),
        "event_files_then": [],
    }
    assert calls == [("patch", {"root_logdir": str(tmp_path / "run" / "tb")}), init, "finish", "unpatch"]
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents*"))

    calls.clear()  # a failed init leaves TensorBoard unpatched
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(calls, tmp_path, fail=True))
    with pytest.raises(RuntimeError, match="wandb.init failed"):
        RunLogger(tmp_path / "again", {}, wandb_project="textgym")
    assert calls[0][0] == "patch" and calls[-1] == "unpatch"


def test_a_short_ppo_run_logs_its_evaluations_samples_warnings_and_config(tmp_path, tiny_model):
    from baselines import train

    out = tmp_path / "run"
    argv = [*TINY_RUN, "--total-timesteps", "32", "--eval-every", "16", "--seed", "5", "--out", str(out)]
    assert train.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    curve = {point["step"]: point for point in summary["curve"]}
    assert list(curve) == [0, 16, 32] and curve[0] == summary["initial"] and curve[32] == summary["final"]
    events = read_events(out / "tb")
    assert "train/loss" in events.Tags()["scalars"]  # SB3's training scalars: the same TensorBoard run
    for key in (*METRICS, *GUARDS):
        expected = {step: evaluation_metrics(point)[key] for step, point in curve.items()}
        assert scalars(events, f"eval/{key}") == pytest.approx(expected, rel=1e-6), key
    assert summary["final"]["perplexity_mean"] > 1

    records = [json.loads(line) for line in (out / "eval_generations.jsonl").read_text().splitlines()]
    samples = texts(events, SAMPLES_TAG)
    assert list(samples) == [0, 16, 32]
    for step, chunk in zip(samples, (records[0:2], records[2:4], records[4:6]), strict=True):
        for record in chunk:
            assert f"| {markdown_cell(record['generations'][0])} | {record['reward']:.4g} |" in samples[step]
    logged = "\n".join(texts(events, WARNINGS_TAG).values()) if summary["warnings"] else ""
    assert logged == "\n".join(f"- {markdown_cell(text)}" for text in summary["warnings"])

    values, metric_tags = hparams(events)
    assert values["seed"] == 5 and values["model"] == "tiny" and values["total_timesteps"] == 32
    assert values["wandb_project"] == "" and set(values) == set(summary["config"])
    assert "eval/reward_mean" in metric_tags and "eval/perplexity_median" in metric_tags

    rows = read_csv(out / EVAL_CSV)
    assert [row["tag"] for row in rows] == ["initial", "step16", "final"]
    for row in rows:
        point = curve[int(row["step"])]
        assert int(row["episodes"]) == point["episodes"] == 2
        for key, value in evaluation_metrics(point).items():
            assert float(row[key]) == value, key  # exact: the CSV holds repr of each float


def test_a_short_dqn_run_logs_its_candidate_metrics(tmp_path, tiny_model):
    from baselines import train

    out = tmp_path / "run"
    flags = ["--algo", "dqn", "--env", "TextGym/SentimentCandidate-v0", "--model", "tiny", "--out", str(out)]
    budget = ["--max-context-tokens", "48", "--max-reply-tokens", "2", "--num-candidates", "3", "--eval-episodes", "2"]
    rest = ["--learning-starts", "3", "--no-progress-bar", "--torch-threads", "1", "--n-envs", "2"]
    assert train.main([*flags, *budget, *rest, "--total-timesteps", "6"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    events = read_events(out / "tb")
    assert scalars(events, "eval/top_candidate_rate") == pytest.approx(
        {0: summary["initial"]["top_candidate_rate"], 6: summary["final"]["top_candidate_rate"]}
    )
    assert "eval/perplexity_mean" not in events.Tags()["scalars"]  # the DQN evaluator measures none
    rows = read_csv(out / EVAL_CSV)
    assert [row["tag"] for row in rows] == ["initial", "final"] and rows[1]["perplexity_mean"] == ""
    assert float(rows[1]["top_candidate_rate"]) == summary["final"]["top_candidate_rate"]
    assert list(texts(events, SAMPLES_TAG)) == [0, 6]
