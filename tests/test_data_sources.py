"""Data sources through ``datasets``: configs, a dataset's own splits, the hash fallback, one read per process."""

import json

import datasets
import gymnasium as gym
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import textgym  # noqa: F401  (registers the ids)
from textgym import data
from textgym.data import DatasetError, split_of
from textgym.envs.dialogue import DialogueTask
from textgym.envs.summarization import SummarizationTask

SPLIT_FILES = ("train", "validation", "test")


def cnn_rows(config, split, count):
    return {
        "article": [f"{config} {split} article {i}: the council met and voted on the new park." for i in range(count)],
        "highlights": [f"{config} {split} summary {i}." for i in range(count)],
        "id": [f"{split}-{i:03d}" for i in range(count)],
    }


def write_cnn_dailymail(root, configs=("2.0.0", "3.0.0"), splits=SPLIT_FILES, count=12):
    """A hub snapshot of CNN/DailyMail in miniature: README configs, ``<config>/<split>-*.parquet``."""
    lines = ["---", "configs:"]
    for config in configs:
        (root / config).mkdir(parents=True)
        lines += [f"- config_name: {config}", "  data_files:"]
        for split in splits:
            pq.write_table(pa.table(cnn_rows(config, split, count)), root / config / f"{split}-00000-of-00001.parquet")
            lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (root / "README.md").write_text("\n".join(lines + ["---", ""]), encoding="utf-8")
    return str(root)


@pytest.fixture
def load_counter(tmp_path, monkeypatch):
    """Count ``datasets.load_dataset`` calls; datasets' cache goes to the test's directory."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    calls = []
    real = datasets.load_dataset

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", counting)
    return calls


def test_cnn_dailymail_directory_uses_its_validation_split_and_is_read_once_by_8_envs(
    tmp_path, load_counter, tiny_model
):
    root = write_cnn_dailymail(tmp_path / "cnn_dailymail")
    envs = gym.make_vec(
        "TextGym/SummarizationUtterance-v0",
        num_envs=8,
        vectorization_mode="sync",
        model=tiny_model,
        dataset=root,
        dataset_config="3.0.0",
        split="validation",
        max_context_tokens=64,
        max_reply_tokens=4,
    )
    assert len(load_counter) == 1
    _, infos = envs.reset(seed=list(range(8)))
    validation_ids = [f"validation-{i:03d}" for i in range(12)]
    for env in envs.envs:
        task = env.unwrapped.task
        # The dataset's validation rows, all of them, in order: no hash split of train rows.
        assert task.prompt_ids() == validation_ids
        assert {e.source for e in task.examples} == set(cnn_rows("3.0.0", "validation", 12)["article"])
        assert {e.schema for e in task.examples} == {"cnn_dailymail"}
    assert set(infos["prompt_id"]) <= set(validation_ids)
    envs.close()
    assert len(load_counter) == 1


def test_dataset_split_reads_that_split_whole(tmp_path, load_counter):
    root = write_cnn_dailymail(tmp_path / "cnn")
    task = SummarizationTask(dataset=root, dataset_config="2.0.0", dataset_split="test", split="validation")
    assert task.prompt_ids() == [f"test-{i:03d}" for i in range(12)]
    assert task.examples[0].source.startswith("2.0.0 test article 0")
    # The train split of the same source comes from the same load.
    assert SummarizationTask(dataset=root, dataset_config="2.0.0").prompt_ids()[0] == "train-000"
    assert len(load_counter) == 1


def test_unknown_config_is_named_with_the_configs_there_are(tmp_path, load_counter):
    root = write_cnn_dailymail(tmp_path / "cnn")
    with pytest.raises(DatasetError) as raised:
        SummarizationTask(dataset=root, dataset_config="9.9.9")
    assert "'9.9.9'" in str(raised.value) and "'2.0.0'" in str(raised.value) and "'3.0.0'" in str(raised.value)


def test_unknown_dataset_split_is_named_with_the_splits_there_are(tmp_path, load_counter):
    root = write_cnn_dailymail(tmp_path / "cnn")
    with pytest.raises(DatasetError, match=r"has no split 'dev'; it has \['train', 'validation', 'test'\]"):
        SummarizationTask(dataset=root, dataset_config="3.0.0", dataset_split="dev")


def test_a_missing_split_of_a_split_source_is_an_error_not_a_hash_split(tmp_path, load_counter):
    root = write_cnn_dailymail(tmp_path / "cnn", configs=("3.0.0",), splits=("train", "test"))
    with pytest.raises(DatasetError, match=r"no split 'validation'; it has \['train', 'test'\].*dataset_split="):
        SummarizationTask(dataset=root, dataset_config="3.0.0", split="validation")


def test_a_single_parquet_file_falls_back_to_the_hash_split(tmp_path, load_counter):
    path = tmp_path / "articles.parquet"
    pq.write_table(pa.table(cnn_rows("x", "all", 60)), path)
    for split in SPLIT_FILES:
        ids = SummarizationTask(dataset=str(path), split=split).prompt_ids()
        assert ids == [f"all-{i:03d}" for i in range(60) if split_of(f"all-{i:03d}") == split]
    assert len(load_counter) == 1


def test_dialogue_reads_a_directory_with_its_own_splits(tmp_path, load_counter):
    root = tmp_path / "dialogs"
    root.mkdir()
    for split in SPLIT_FILES:
        rows = {"id": [f"{split}{i}" for i in range(3)], "dialog": [[f"hi {split} {i}", "hello"] for i in range(3)]}
        pq.write_table(pa.table(rows), root / f"{split}-00000-of-00001.parquet")
    task = DialogueTask(dataset=str(root), split="test")
    assert task.prompt_ids() == ["test0", "test1", "test2"]
    assert task.conversations[2].turns[0].user == "hi test 2"


def test_a_json_file_is_read_once_and_again_when_it_changes(tmp_path, monkeypatch):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"dialog": ["hi", f"reply {i}"]}) for i in range(40)), encoding="utf-8")
    reads = []
    real = data.read_json_records
    monkeypatch.setattr(data, "read_json_records", lambda p: reads.append(p) or real(p))
    first = DialogueTask(dataset=str(path))
    assert DialogueTask(dataset=str(path)).conversations == first.conversations
    assert len(reads) == 1
    path.write_text("\n".join(json.dumps({"dialog": ["bye", f"answer {i}"]}) for i in range(41)), encoding="utf-8")
    assert DialogueTask(dataset=str(path)).conversations[0].turns[0].user == "bye"
    assert len(reads) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"dataset_config": "3.0.0"}, ValueError, "dataset_config='3.0.0' without a dataset"),
        ({"dataset_split": "test"}, ValueError, "dataset_split='test' without a dataset"),
        ({"dataset": "d.jsonl", "dataset_config": "3.0.0"}, DatasetError, "has no configs; got dataset_config='3.0.0'"),
        ({"dataset": "d.jsonl", "dataset_split": 3}, TypeError, "dataset_split must be None or a non-empty str"),
        (
            {"dataset": "d.jsonl", "dataset_split": "validation"},
            DatasetError,
            "no split 'validation'; it has ['train']",
        ),
    ],
)
def test_bad_dataset_arguments_are_named(tmp_path, monkeypatch, kwargs, error, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text(json.dumps({"dialog": ["hi", "hello"]}), encoding="utf-8")
    with pytest.raises(error) as raised:
        DialogueTask(**kwargs)
    assert message in str(raised.value)


def test_an_unreachable_hub_id_says_what_to_do_instead(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetError, match=r"could not load dataset 'no-such-org/no-such-data'.*pass a local file"):
        SummarizationTask(dataset="no-such-org/no-such-data", dataset_config="3.0.0")


@pytest.mark.parametrize("env_id", ["TextGym/Dialogue-v0", "TextGym/Summarization-v0"])
def test_leaderboard_tracks_pin_the_dataset_arguments(env_id):
    from leaderboard.tracks import pinned_kwargs_problems

    assert pinned_kwargs_problems(env_id, {"split": "validation"}, "validation") == []
    for name, value in [("dataset", "cnn.jsonl"), ("dataset_config", "3.0.0"), ("dataset_split", "test")]:
        (problem,) = pinned_kwargs_problems(env_id, {"split": "validation", name: value}, "validation")
        assert f"env kwarg {name}={value!r} differs from the track's None" == problem


def test_train_cli_trains_and_evaluates_on_a_datasets_own_splits(tmp_path, load_counter):
    from tiny_runs import TINY_RUN

    from baselines import train

    root = write_cnn_dailymail(tmp_path / "cnn")
    run = [*TINY_RUN, "--env", "TextGym/Summarization-v0", "--total-timesteps", "16", "--dataset", root]
    out = tmp_path / "run"
    assert train.main([*run, "--dataset-config", "3.0.0", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["dataset"], config["dataset_config"]) == (root, "3.0.0")
    records = [json.loads(line) for line in (out / "eval_generations.jsonl").read_text().splitlines()]
    assert records and all(r["prompt_id"].startswith("validation-") for r in records)  # its own validation rows
    assert all(r["prompt"][-1]["content"].startswith("3.0.0 validation article") for r in records)


def test_train_cli_names_bad_dataset_arguments_on_stderr(tmp_path, load_counter, capsys):
    from tiny_runs import TINY_RUN

    from baselines import train

    root = write_cnn_dailymail(tmp_path / "cnn")
    out = tmp_path / "refused"
    summarization = [*TINY_RUN, "--env", "TextGym/Summarization-v0", "--out", str(out), "--dataset", root]
    assert train.main([*summarization, "--dataset-config", "9.9.9"]) == 2
    assert "'9.9.9'" in capsys.readouterr().err and not (out / "checkpoint").exists()
    assert train.main([*summarization, "--dataset-config", "3.0.0", "--dataset-split", "dev"]) == 2
    assert "'dev'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # Sentiment takes no dataset: argparse's usage error
        train.main([*TINY_RUN, "--dataset", root, "--out", str(out)])
    assert exited.value.code == 2 and "TextGym/Sentiment-v0 takes no dataset" in capsys.readouterr().err
    no_source = [*TINY_RUN, "--env", "TextGym/Summarization-v0", "--out", str(out), "--dataset-config", "3.0.0"]
    assert train.main(no_source) == 2
    assert "dataset_config applies to a dataset" in capsys.readouterr().err and not (out / "checkpoint").exists()
