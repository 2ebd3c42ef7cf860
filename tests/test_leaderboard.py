"""The leaderboard: bundles verified by re-scoring and re-running, tampering rejected, the page rendered safely."""

import dataclasses
import json
import os
import re
import shutil
import struct
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from leaderboard_support import (
    ENV,
    HOSTILE,
    PHRASES,
    QUICK,
    ROOT,
    assert_rejected,
    dom_rows,
    edit_manifest,
    edit_records,
    phrase,
    read_lines,
    run_cli,
    scripted_records,
    synthetic_entry,
    write_bundle,
    write_lines,
)

import textgym  # noqa: F401
from leaderboard import safejson
from leaderboard.bundle import RunData
from leaderboard.cli import main
from leaderboard.entries import ENTRIES_PATH, EntriesError, append_entry, load_entries
from leaderboard.render import SITE_DIR, markdown_escape, render_html, render_markdown
from leaderboard.stats import metrics
from leaderboard.tracks import pinned_kwargs_problems
from leaderboard.verify import verify_bundle
from textgym.core import start_episode
from textgym.envs.sentiment import sentiment_reward
from textgym.registration import make_task

# -- bundles to tamper with -----------------------------------------------------------------


@pytest.fixture(scope="module")
def genuine(tmp_path_factory, tiny_model):
    directory = tmp_path_factory.mktemp("genuine")
    runs = [RunData(s, scripted_records(directory, ENV, s, phrase)) for s in range(QUICK.training_seeds)]
    return write_bundle(directory / "bundle", runs)


@pytest.fixture
def bundle(genuine, tmp_path):
    """A fresh copy of the genuine bundle to tamper with."""
    return Path(shutil.copytree(genuine, tmp_path / "bundle"))


# -- genuine bundles --------------------------------------------------------------------------


def test_schemas_are_valid_draft_2020_12():
    from jsonschema import Draft202012Validator

    for name in ("bundle", "generation", "entries"):
        Draft202012Validator.check_schema(json.loads((ROOT / "leaderboard/schema" / f"{name}.schema.json").read_text()))


def test_genuine_bundle_verifies(genuine, capsys):
    code, out = run_cli(capsys, "verify", genuine)
    assert code == 0, out
    assert "OK: 96 episodes re-scored" in out
    report = verify_bundle(genuine)
    assert report.ok and sorted(report.rescored_runs) == [0, 1, 2]
    rewards = [r["reward"] for r in read_lines(genuine)]
    assert report.rescored["mean_reward"] == pytest.approx(np.mean(rewards))


def test_text_level_prompt_equals_env_reset(tiny_model):
    for env_id in (ENV, "TextGym/SparseCompletionUtterance-v0"):
        env = gym.make(env_id, model="tiny", split="validation")
        task = make_task(env_id, split="validation", model="tiny")
        for seed in (10_000, 10_017, 123):
            _, info = env.reset(seed=seed)
            episode = start_episode(task, seed=seed)
            assert (episode.prompt.prompt_id, episode.prompt.messages) == (info["prompt_id"], info["messages"])


def test_track_pins_every_env_argument_but_the_model():
    for env_id in textgym.env_ids():
        assert pinned_kwargs_problems(env_id, {"model": "default", "split": "validation"}, "validation") == []
    problems = pinned_kwargs_problems("TextGym/SparseCompletion-v0", {"difficulty": 1, "split": "validation"}, "test")
    assert problems == ["env kwarg split='validation' differs from the track's 'test'"]
    problems = pinned_kwargs_problems(
        "TextGym/SparseCompletion-v0", {"families": ["count"], "split": "validation"}, "validation"
    )
    assert problems and "families" in problems[0]


# -- 1. an edited score -----------------------------------------------------------------------


def test_edited_mean_is_rejected(bundle, capsys):
    edit_manifest(bundle, lambda m: m["claimed"].update(mean_reward=m["claimed"]["mean_reward"] + 0.05))
    code, out = run_cli(capsys, "verify", bundle)
    assert code == 1
    assert out.startswith(f"verify {bundle}: REJECTED: 1 problem(s)\n  [claim] the bundle claims mean reward")
    assert "(tolerance 0.0001)" in out


def test_edited_run_ci_is_rejected(bundle):
    edit_manifest(bundle, lambda m: m["runs"][1]["claimed"].update(ci95=[0.5, 0.9]))
    assert_rejected(bundle, "claim", "run with training seed 1 claims a 95% CI lower bound of 0.5")


def test_edited_episode_reward_is_rejected(bundle):
    def change(records):
        records[3]["reward"] = 1.0

    edit_records(bundle, change)
    assert_rejected(bundle, "claim", "line 4", "the episode claims reward 1")


# -- 2. generations that do not give the claimed rewards -----------------------------------


def test_generation_that_does_not_earn_its_reward_is_rejected(bundle):
    def change(records):
        for record in records:
            if record["turn_rewards"][0] < 0:
                record["generations"] = ["was a wonderful, brilliant, beautiful film."]
                break

    edit_records(bundle, change)
    assert_rejected(bundle, "reward", "generation 0 scores 0.9", "the record claims -")


def test_extra_turn_is_rejected(bundle):
    def change(records):
        records[0]["generations"].append("Great.")
        records[0]["turn_rewards"].append(0.6249)
        records[0]["reward"] += 0.6249

    edit_records(bundle, change)
    assert_rejected(bundle, "reward", "the task ended after generation 0")


# -- 3. prompts swapped for easier ones or wrong prompt ids ----------------------------------


def test_prompt_text_swapped_is_rejected(bundle):
    def change(records):
        records[5]["prompt"][1]["content"] = "This wonderful, uplifting film was"

    edit_records(bundle, change)
    assert_rejected(bundle, "prompt", "line 6", "prompt messages differ")


def test_prompt_id_swapped_is_rejected(bundle):
    task = make_task(ENV, split="validation")
    easier_id, text = task.prompts[0]

    def change(records):
        # A consistent swap: another validation prompt's id and messages, for the same seed.
        record = records[7]
        if record["prompt_id"] == easier_id:
            record = records[8]
        record["prompt_id"] = easier_id
        record["prompt"][1]["content"] = text

    edit_records(bundle, change)
    assert_rejected(bundle, "prompt", "the seed gives prompt id", repr(easier_id))


def test_easier_env_arguments_are_rejected(bundle):
    def change_kwargs(kwargs):
        kwargs["system_prompt"] = "Write only very positive words."

    edit_manifest(bundle, lambda m: change_kwargs(m["env"]["kwargs"]))
    edit_records(bundle, lambda records: [change_kwargs(r["env_kwargs"]) for r in records] and None)
    assert_rejected(bundle, "env_kwargs", "env kwarg system_prompt=")


def test_other_split_is_rejected(bundle):
    edit_manifest(bundle, lambda m: m["env"]["kwargs"].update(split="train"))
    edit_records(bundle, lambda records: [r["env_kwargs"].update(split="train") for r in records] and None)
    assert_rejected(bundle, "env_kwargs", "split='train' differs from the track's 'validation'")


# -- 4. fewer episodes or seeds than the track, duplicated episodes --------------------------


def test_missing_episode_is_rejected(bundle):
    edit_records(bundle, lambda records: [r for r in records if not (r["training_seed"] == 2 and r["seed"] == 10_031)])
    assert_rejected(bundle, "track", "training seed 2 has 31 of the 32 episodes", "missing prompt seeds 10031")


def test_fewer_training_seeds_are_rejected(bundle):
    edit_manifest(bundle, lambda m: m.update(runs=m["runs"][:2]))
    edit_records(bundle, lambda records: [r for r in records if r["training_seed"] != 2])
    assert_rejected(bundle, "track", "needs 3 training seeds", "the bundle has 2")


def test_duplicated_episode_is_rejected(bundle):
    def change(records):
        # Episode 10004 played twice: once in place of 10005, once appended.
        copy = dict(records[4])
        records[5] = copy
        records.append(dict(copy))

    edit_records(bundle, change)
    out = assert_rejected(bundle, "track", "duplicate episode: prompt seed 10004 of training seed 0")
    assert "missing prompt seeds 10005" in out


def test_unofficial_track_is_rejected(bundle):
    edit_manifest(bundle, lambda m: m["track"].update(episodes=8))
    assert_rejected(bundle, "track", "track 'quick' has episodes=32, the bundle claims 8")


# -- 5. another env version, an incompatible textgym -----------------------------------------


def test_other_env_version_is_rejected(bundle):
    def bump(item):
        item["env_id"] = "TextGym/SentimentUtterance-v1"

    edit_manifest(bundle, lambda m: (m["env"].update(id="TextGym/SentimentUtterance-v1", version=1), bump(m["track"])))
    edit_records(bundle, lambda records: [bump(r) or r.update(env_version=1) for r in records] and None)
    assert_rejected(bundle, "env_version", "TextGym/SentimentUtterance-v1 is not registered", "-v0")


def test_record_of_another_env_version_is_rejected(bundle):
    edit_records(bundle, lambda records: records[2].update(env_version=3))
    assert_rejected(bundle, "env_version", "line 3: env_version 3 differs from bundle.json's 0")


def test_incompatible_textgym_is_rejected(bundle):
    edit_manifest(bundle, lambda m: m.update(textgym_version="0.2.0"))
    edit_records(bundle, lambda records: [r.update(textgym_version="0.2.0") for r in records] and None)
    assert_rejected(bundle, "textgym_version", "textgym 0.2.0 is incompatible with the installed textgym")


# -- 6. malformed, oversized, hostile input -------------------------------------------------


def replace_manifest_text(bundle, transform):
    path = bundle / "bundle.json"
    path.write_text(transform(path.read_text()))


@pytest.mark.parametrize(
    ("transform", "code", "phrase"),
    [
        (lambda t: t[: len(t) // 2], "malformed", "bundle.json is not valid JSON"),
        (lambda t: t.replace('"wall_time_s": 1.5', '"wall_time_s": NaN'), "malformed", "NaN is not valid JSON"),
        (lambda t: t.replace('"wall_time_s": 1.5', '"wall_time_s": Infinity'), "malformed", "Infinity is not valid"),
        (lambda t: t.replace('"wall_time_s": 1.5', '"wall_time_s": 1e999'), "malformed", "overflows to infinity"),
        (lambda t: t.replace('"wall_time_s": 1.5', '"wall_time_s": ' + "9" * 400), "malformed", "longer than 20"),
        (lambda t: t.replace('"format_version": 1', '"format_version": 1, "format_version": 1'), "malformed", "twice"),
        (lambda t: t.replace('"format_version": 1', '"notes": ' + "[" * 5000 + "]" * 5000), "hostile", "5001 deep"),
        (lambda t: t + " " * (1 << 20), "too_large", "the limit is 1048576 bytes"),
        (lambda t: t.replace('"name": "Scripted replies"', '"name": "' + "x" * 100_000 + '"'), "schema", "is too long"),
        (lambda t: t.replace('"id": "tiny"', '"id": "<script>alert(1)</script>"'), "schema", "model/id"),
        (lambda t: t.replace('"checkpoint": null', '"checkpoint": "checkpoint/../../etc"', 1), "schema", "checkpoint"),
        (
            lambda t: t.replace('"format_version": 1', '"format_version": 1, "__class__": "os.system"'),
            "schema",
            "__class__",
        ),
        (lambda t: t.replace('"format_version": 1', '"format_version": "1"'), "schema", "format_version"),
    ],
    ids=[
        "truncated",
        "nan",
        "infinity",
        "overflow",
        "huge-int",
        "duplicate-key",
        "deep-nesting",
        "oversized-file",
        "huge-string",
        "markup-in-model-id",
        "path-traversal",
        "unknown-field",
        "wrong-type",
    ],
)
def test_hostile_manifest_is_rejected(bundle, transform, code, phrase):
    manifest = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps(manifest))  # one line, known spacing
    replace_manifest_text(bundle, transform)
    out = assert_rejected(bundle, code, phrase)
    assert len(out) < 5000  # reasons are short even for huge input


def test_hostile_generations_are_rejected(bundle):
    lines = (bundle / "generations.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["generations"] = ["x" * (2 << 20)]
    write_lines(bundle, [record])
    assert_rejected(bundle, "too_large", "generations.jsonl line 1 is over the limit")
    (bundle / "generations.jsonl").write_bytes(b'{"format_version": 1, "env_id": "\xff\xfe"}\n')
    assert_rejected(bundle, "malformed", "not UTF-8")
    record = json.loads(lines[0])
    record["prompt"][1]["content"] = {"role": "user"}
    write_lines(bundle, [record])
    assert_rejected(bundle, "schema", "generations.jsonl line 1 at prompt/1/content")


def test_symbolic_links_are_refused(bundle, tmp_path):
    outside = tmp_path / "elsewhere.jsonl"
    shutil.move(bundle / "generations.jsonl", outside)
    os.symlink(outside, bundle / "generations.jsonl")
    assert_rejected(bundle, "path", "generations.jsonl is a symbolic link")


def test_symbolic_link_checkpoint_is_refused(bundle, tmp_path):
    (tmp_path / "real").mkdir()
    (bundle / "checkpoint").mkdir()
    os.symlink(tmp_path / "real", bundle / "checkpoint" / "seed0")
    edit_manifest(bundle, lambda m: m["runs"][0].update(checkpoint="checkpoint/seed0"))
    assert_rejected(bundle, "path", "goes through a symbolic link")


def test_strict_json_reader():
    assert safejson.loads('{"a": [1, 2.5, "[[["]}', "x") == {"a": [1, 2.5, "[[["]}
    for text in ("-Infinity", '{"a": 1, "a": 2}', "[" * 40 + "]" * 40, "1" * 30):
        with pytest.raises(safejson.UnsafeInputError):
            safejson.loads(text, "x")


# -- submit, entries and rendering ----------------------------------------------------------


def test_submit_appends_entries_and_never_drops_any(genuine, tmp_path, capsys, tiny_model):
    entries, site = tmp_path / "entries.json", tmp_path / "site"
    code, out = run_cli(capsys, "submit", genuine, "--entries", entries, "--site", site, "--date", "2025-01-02")
    assert code == 0, out
    first = load_entries(entries)
    assert len(first) == 1 and first[0]["verification"]["level"] == "rescored"
    assert first[0]["submitted"] == "2025-01-02"

    code, out = run_cli(capsys, "submit", genuine, "--entries", entries, "--site", site)
    assert code == 1 and "already on the leaderboard" in out
    assert load_entries(entries) == first

    # A second bundle whose submitter-written text holds markup.
    runs = [RunData(s, scripted_records(tmp_path, ENV, s, lambda t, p: "was great.")) for s in range(3)]
    hostile = write_bundle(tmp_path / "hostile", runs, name=HOSTILE)
    code, out = run_cli(capsys, "submit", hostile, "--entries", entries, "--site", site, "--date", "2025-01-03")
    assert code == 0, out
    both = load_entries(entries)
    assert both[0] == first[0] and len(both) == 2

    page = (site / "index.html").read_text()
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;&lt;img" in page
    assert "<img" not in page and page.count("<script>") == 1
    table = (site / "LEADERBOARD.md").read_text()
    assert "\\<script\\>" in table and "\\| \\*x\\* \\[l\\]\\(u\\)" in table
    assert re.search(r"(?<!\\)[<>]", table) is None
    rows = [line for line in table.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert len(rows) == 2 and all(row.count(" | ") == 13 for row in rows)

    # A bad bundle changes nothing.
    broken = Path(shutil.copytree(genuine, tmp_path / "broken"))
    edit_manifest(broken, lambda m: m["claimed"].update(mean_reward=0.99))
    code, out = run_cli(capsys, "submit", broken, "--entries", entries, "--site", site)
    assert code == 1 and "not added" in out and load_entries(entries) == both


def test_corrupted_entries_file_is_never_overwritten(tmp_path):
    path = tmp_path / "entries.json"
    path.write_text('{"format_version": 1, "entries": [{"id": "x"}]}')
    with pytest.raises(EntriesError):
        append_entry({"id": "0" * 64}, path)
    assert path.read_text() == '{"format_version": 1, "entries": [{"id": "x"}]}'


def test_repository_entries_and_site_are_up_to_date():
    entries = load_entries(ENTRIES_PATH)
    assert (SITE_DIR / "index.html").read_text(encoding="utf-8") == render_html(entries)
    assert (SITE_DIR / "LEADERBOARD.md").read_text(encoding="utf-8") == render_markdown(entries)


def test_markdown_escape_keeps_cells_intact():
    assert markdown_escape("a|b\nc") == "a\\|b c"
    assert markdown_escape("<b>") == "\\<b\\>"


# -- the page in a real browser -------------------------------------------------------------


def test_page_in_headless_chromium(chromium, tmp_path):
    entries_path = tmp_path / "entries.json"
    for entry in (
        synthetic_entry("Bravo PPO", 0.41, "2025-03-01", "rerun", hardware="1x H100"),
        synthetic_entry(HOSTILE, 0.73, "2025-02-01"),
        synthetic_entry("Alpha DQN", 0.12, "2025-04-01"),
        synthetic_entry("Charlie GRPO", 0.55, "2025-01-15", "rerun"),
    ):
        append_entry(entry, entries_path)
    site = tmp_path / "site"
    code = main(["render", "--entries", str(entries_path), "--site", str(site)])
    assert code == 0
    url = (site / "index.html").as_uri()

    ranked = dom_rows(chromium, url)
    assert ranked.html_attrs.get("data-js") == "ready"  # the inline script ran under the page's CSP
    assert "".join(ranked.title) == "TextGym leaderboard"  # the markup in a name did not run
    assert "img" not in ranked.elements  # nor did it make an element
    names = [row[1] for row in ranked.rows]
    assert [n.split("by tests")[0] for n in names] == [HOSTILE, "Charlie GRPO", "Bravo PPO", "Alpha DQN"]
    assert [row[3] for row in ranked.rows] == ["0.7300", "0.5500", "0.4100", "0.1200"]
    assert ranked.rows[2][11] == "✔✔ re-run" and ranked.rows[3][11] == "✔ re-scored"

    by_name = dom_rows(chromium, url + "?sort=entry&dir=asc")
    assert by_name.table_attrs.get("data-sorted") == "entry-asc"
    assert [row[1].split("by tests")[0] for row in by_name.rows] == [HOSTILE, "Alpha DQN", "Bravo PPO", "Charlie GRPO"]

    by_date = dom_rows(chromium, url + "#sort=date&dir=desc")
    assert [row[10] for row in by_date.rows] == ["2025-04-01", "2025-03-01", "2025-02-01", "2025-01-15"]

    by_mean = dom_rows(chromium, url + "?sort=mean&dir=asc")
    assert [row[3] for row in by_mean.rows] == ["0.1200", "0.4100", "0.5500", "0.7300"]


def test_screenshot_is_checked_in():
    data = (ROOT / "leaderboard" / "screenshot.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 250_000
    width, height = struct.unpack(">II", data[16:24])
    assert 600 <= width <= 1600 and 300 <= height <= 1200


# -- bundles from training runs, and re-run verification ------------------------------------


def make_run_dir(root, seed):
    """A baselines.train-style run directory: an untrained (perturbed) tiny policy, its checkpoint and evaluation."""
    from stable_baselines3.common.env_util import make_vec_env

    from baselines.checkpoint import save_checkpoint
    from baselines.evaluate import evaluate_policy
    from baselines.train import Args, build, checkpoint_metadata, env_kwargs_of

    out = Path(root) / f"run-s{seed}"
    out.mkdir()
    args = Args(
        env="TextGym/Sentiment-v0", model="tiny", seed=seed, kl_coef=0.0, batch_size=32, device="cpu", torch_threads=1
    )
    env = make_vec_env(args.env, n_envs=1, seed=seed, env_kwargs=env_kwargs_of(args))
    model = build(args, env)
    torch.manual_seed(seed)
    with torch.no_grad():  # training seeds give different policies
        for parameter in model.policy.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    save_checkpoint(out / "checkpoint", model.policy, checkpoint_metadata(args, model))
    kwargs = {**env_kwargs_of(args), "split": "validation"}
    final = evaluate_policy(
        model.policy, args.env, kwargs, episodes=32, seed=10_000, record_path=str(out / "eval_generations.jsonl")
    )
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(args)))
    summary = {
        "final": {k: v for k, v in final.items() if k != "rewards"},
        "wall_time_s": 12.0,
        "env_steps": 0,
        "device": "cpu",
        "textgym_version": textgym.__version__,
    }
    (out / "summary.json").write_text(json.dumps(summary))
    env.close()
    return out


@pytest.fixture(scope="module")
def run_bundle(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("runs")
    run_dirs = [make_run_dir(root, seed) for seed in range(3)]
    code = main(["bundle", *map(str, run_dirs), "--out", str(root / "bundle"), "--hardware", "test CPU"])
    assert code == 0
    return root / "bundle"


def test_bundle_command_turns_run_dirs_into_a_verified_bundle(run_bundle, capsys):
    manifest = json.loads((run_bundle / "bundle.json").read_text())
    assert manifest["model"] == {
        "id": "tiny",
        "revision": manifest["model"]["revision"],
        "algo": "ppo",
        "decoding": "sample",
    }
    assert [run["checkpoint"] for run in manifest["runs"]] == [f"checkpoint/seed{s}" for s in range(3)]
    assert sorted(p.name for p in (run_bundle / "checkpoint" / "seed0").iterdir()) == [
        "checkpoint.json",
        "policy.safetensors",
    ]
    assert manifest["compute"] == {"hardware": "test CPU", "wall_time_s": 36.0, "env_steps": 0}
    code, out = run_cli(capsys, "verify", run_bundle)
    assert code == 0, out


def test_rerun_confirms_the_checkpoints_on_held_out_prompts(run_bundle, capsys, tmp_path):
    entries = tmp_path / "entries.json"
    code, out = run_cli(
        capsys, "submit", run_bundle, "--rerun", "--secret-seed", 424_242, "--entries", entries, "--site", tmp_path
    )
    assert code == 0, out
    assert "OK: re-run on held-out prompts: seed 0:" in out and "(re-run)" in out
    (entry,) = load_entries(entries)
    assert entry["verification"]["level"] == "rerun"
    assert [run["training_seed"] for run in entry["verification"]["rerun"]["runs"]] == [0, 1, 2]
    assert "424242" not in json.dumps(entry)  # only a commitment to the secret seed is kept
    assert entry["guard"]["perplexity_model"] == "tiny" and entry["guard"]["perplexity_median"] > 1  # the LM was loaded
    assert "✔✔ re-run" in (tmp_path / "index.html").read_text()


def test_rerun_rejects_cherry_picked_generations(run_bundle, capsys, tmp_path):
    bundle = Path(shutil.copytree(run_bundle, tmp_path / "cherry"))
    pool = [*PHRASES, "was wonderful, brilliant and beautiful.", "was a great, great joy."]

    def best_of_many(records):
        for record in records:
            candidates = [record["generations"][0], *pool]
            scores = sentiment_reward(candidates)
            best = int(np.argmax(scores))
            # The forger drops the guard numbers of the sampled reply rather than leave them to contradict the text.
            record.update(generations=[candidates[best]], turn_rewards=[scores[best]], reward=scores[best], guard=None)

    edit_records(bundle, best_of_many)
    records = read_lines(bundle)

    def claims(manifest):
        for run in manifest["runs"]:
            run["claimed"] = metrics([r["reward"] for r in records if r["training_seed"] == run["training_seed"]])
        manifest["claimed"] = metrics([r["reward"] for r in records])

    edit_manifest(bundle, claims)
    code, out = run_cli(capsys, "verify", bundle)
    assert code == 0, out  # every generation really earns its reward: re-scoring alone cannot tell
    out = assert_rejected_rerun(capsys, bundle)
    assert "the claimed generations do not represent this policy" in out


def assert_rejected_rerun(capsys, bundle):
    code, out = run_cli(capsys, "verify", bundle, "--rerun", "--secret-seed", 77_000)
    assert code == 1 and "[rerun] run with training seed 0: its checkpoint scores" in out, out
    return out


def test_rerun_needs_a_secret_seed_apart_from_the_track(run_bundle, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(run_bundle), "--rerun"])
    assert exit_info.value.code == 2
    assert "--rerun needs --secret-seed" in capsys.readouterr().err
    code, out = run_cli(capsys, "verify", run_bundle, "--rerun", "--secret-seed", 9_990)
    assert code == 1 and "overlap the track's prompt seeds 10000..10031" in out


def test_rerun_refuses_a_checkpoint_of_another_model(run_bundle, capsys, tmp_path):
    bundle = Path(shutil.copytree(run_bundle, tmp_path / "other"))
    path = bundle / "checkpoint" / "seed1" / "checkpoint.json"
    meta = json.loads(path.read_text())
    meta["model"] = meta["config"]["model"] = "../../somewhere/else"
    path.write_text(json.dumps(meta))
    code, out = run_cli(capsys, "verify", bundle, "--rerun", "--secret-seed", 5)
    assert code == 1
    assert "checkpoint of training seed 1 is of model '../../somewhere/else', the bundle names 'tiny'" in out
    assert "names a local model path" in out


def test_bundle_of_initial_evaluations_is_the_starting_policy(run_bundle, tmp_path, capsys):
    runs = []
    for seed in range(3):
        run = Path(shutil.copytree(run_bundle.parent / f"run-s{seed}", tmp_path / f"run-s{seed}"))
        runs.append(run)
    code = main(["bundle", *map(str, runs), "--out", str(tmp_path / "none"), "--evaluation", "initial"])
    assert code == 1 and "has no initial evaluation" in capsys.readouterr().out
    for run in runs:  # one evaluation recorded: it is both the initial and the final one
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "initial": summary["final"]}))
    code = main(["bundle", *map(str, runs), "--out", str(tmp_path / "zero"), "--evaluation", "initial"])
    assert code == 0, capsys.readouterr().out
    manifest = json.loads((tmp_path / "zero" / "bundle.json").read_text())
    assert manifest["model"]["algo"] == "zero-shot" and manifest["name"].startswith("Zero-shot LM, sampled")
    assert [run["checkpoint"] for run in manifest["runs"]] == [None, None, None]  # the untrained LM: no checkpoint
    assert not (tmp_path / "zero" / "checkpoint").exists()


def test_render_with_unreadable_entries_fails_and_writes_nothing(tmp_path, capsys):
    entries = tmp_path / "entries.json"
    entries.write_text("{not json")
    site = tmp_path / "site"
    code, out = run_cli(capsys, "render", "--entries", entries, "--site", site)
    assert code == 1 and out.startswith("render: ") and str(entries.name) in out
    assert not site.exists() and entries.read_text() == "{not json"
