"""Trust in the leaderboard: copies refused, guard metrics recomputed, degenerate text flagged, crash-safe writes."""

import datetime as dt
import json
import math
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from leaderboard_support import (
    ENV,
    PHRASES,
    QUICK,
    ROOT,
    dom_rows,
    edit_manifest,
    edit_records,
    phrase,
    read_lines,
    run_chromium,
    run_cli,
    scripted_records,
    write_bundle,
)

from leaderboard import safejson
from leaderboard.bundle import RunData
from leaderboard.copies import entry_identity
from leaderboard.entries import (
    ENTRIES_PATH,
    EntriesError,
    append_entry,
    board_rows,
    load_document,
    load_entries,
    make_entry,
    migrate_to_v2,
)
from leaderboard.render import render_html
from leaderboard.stats import DIVERSITY_RATIO, REPETITION_MARGIN, metrics
from leaderboard.verify import verify_bundle
from textgym.core import play_episode
from textgym.files import atomic_write
from textgym.metrics.functional import distinct_n, repetition_rate, words
from textgym.registration import make_task

QUICK_BUNDLES = ROOT / "benchmarks" / "results" / "quick_track" / "bundles"
#: The quick track's 40 baseline and reference entries, the first of the repository's file (it only grows).
BASELINES = 40
#: The reward-gaming reply of the issue: VADER scores it about 0.99, whatever the prompt.
LOVE = "love wonderful best love wonderful best love wonderful best"
OPENINGS = ("It", "This film", "The story", "The ending", "Honestly, it", "The cast")
ENDINGS = ("for a Sunday.", "to my surprise.", "in the end.", "all along.", "at times.", "for most of it.")


def varied(training_seed, seed):
    """Scripted replies that differ from prompt to prompt, as a sampled LM's do."""
    rng = np.random.default_rng([seed, training_seed])
    middle = PHRASES[rng.integers(len(PHRASES))].rstrip(".")
    return f"{OPENINGS[rng.integers(len(OPENINGS))]} {middle} {ENDINGS[rng.integers(len(ENDINGS))]}"


def runs_of(directory, reply):
    directory.mkdir()
    return [RunData(s, scripted_records(directory, ENV, s, reply)) for s in range(QUICK.training_seeds)]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, tiny_model):
    """Scripted SentimentUtterance bundles: a starting policy, an honest entry and a degenerate one."""
    root = tmp_path_factory.mktemp("trust")
    return {
        "starting": write_bundle(root / "starting", runs_of(root / "a", varied), name="Zero-shot LM", algo="zero-shot"),
        "honest": write_bundle(root / "honest", runs_of(root / "b", phrase), name="Honest PPO"),
        "love": write_bundle(root / "love", runs_of(root / "c", lambda t, s: LOVE), name="Love bot"),
    }


def fresh(bundles, key, tmp_path):
    return Path(shutil.copytree(bundles[key], tmp_path / key))


def submit(capsys, bundle, entries, site, *extra):
    return run_cli(capsys, "submit", bundle, "--entries", entries, "--site", site, "--date", "2025-05-01", *extra)


def rescore_records(env_id, records, env_kwargs=None):
    """Give each record the rewards its (changed) generations earn and no guard claim, as a forger would."""
    task = make_task(env_id, **(env_kwargs or records[0]["env_kwargs"]))
    for record in records:
        rewards = play_episode(task, record["generations"], seed=record["seed"]).rewards
        record.update(turn_rewards=rewards, reward=sum(rewards), guard=None)


def reclaim(bundle):
    """Make the manifest's claims those of its generations (pooled by training seed, then prompt seed)."""
    records = sorted(read_lines(bundle), key=lambda r: (r["training_seed"], r["seed"]))

    def change(manifest):
        for run in manifest["runs"]:
            run["claimed"] = metrics([r["reward"] for r in records if r["training_seed"] == run["training_seed"]])
        manifest["claimed"] = metrics([r["reward"] for r in records])

    edit_manifest(bundle, change)


def rename(bundle, name, submitter):
    edit_manifest(bundle, lambda m: m.update(name=name, submitter=submitter))


# -- copycat submissions --------------------------------------------------------------------


def test_exact_copy_under_another_name_is_rejected_naming_the_entry(bundles, tmp_path, capsys):
    entries, site = tmp_path / "entries.json", tmp_path / "site"
    code, out = submit(capsys, bundles["honest"], entries, site)
    assert code == 0, out
    (original,) = load_entries(entries)

    copycat = fresh(bundles, "honest", tmp_path)
    rename(copycat, "My brand-new PPO", "someone else")
    # Relabelled training seeds change nothing: runs are compared by their episodes.
    edit_records(copycat, lambda records: [r.update(training_seed=r["training_seed"] + 7) for r in records] and None)
    edit_manifest(copycat, lambda m: [run.update(training_seed=run["training_seed"] + 7) for run in m["runs"]])
    assert verify_bundle(copycat).ok  # on its own it is a valid bundle

    code, out = run_cli(capsys, "verify", copycat, "--entries", entries)
    assert code == 1
    assert "[copy] the episodes of training seeds 7, 8, 9 are those of training seeds 0, 1, 2 of listed entry " in out
    assert f"'Honest PPO' by 'tests' (id {original['id'][:12]}, {ENV}, submitted 2025-05-01), exactly" in out
    code, out = submit(capsys, copycat, entries, site)
    assert code == 1 and "[copy]" in out and "not added" in out
    assert load_entries(entries) == [original]


def test_whitespace_and_case_changed_copy_is_rejected_naming_the_entry(bundles, tmp_path, capsys):
    entries, site = tmp_path / "entries.json", tmp_path / "site"
    assert submit(capsys, bundles["honest"], entries, site)[0] == 0
    copycat = fresh(bundles, "honest", tmp_path)
    rename(copycat, "Totally different", "new team")

    def disguise(records):
        for record in records:
            record["generations"] = ["  " + "   ".join(text.upper().split()) + " \n" for text in record["generations"]]
        rescore_records(ENV, records)  # upper case changes VADER's scores: the forger claims the new ones

    edit_records(copycat, disguise)
    reclaim(copycat)
    alone = verify_bundle(copycat)
    assert alone.ok, alone.summary()
    assert alone.bundle.digest != load_entries(entries)[0]["id"]
    assert read_lines(copycat)[0]["generations"] != read_lines(bundles["honest"])[0]["generations"]

    code, out = submit(capsys, copycat, entries, site)
    assert code == 1
    assert "listed entry 'Honest PPO' by 'tests'" in out
    assert "after whitespace and case normalisation" in out and len(load_entries(entries)) == 1
    # One run copied among new ones is a copy too.
    mixed = fresh(bundles, "starting", tmp_path / "mixed")
    rename(mixed, "Mixed", "new team")
    honest_run = [r for r in read_lines(bundles["honest"]) if r["training_seed"] == 1]
    edit_records(mixed, lambda records: [r for r in records if r["training_seed"] != 1] + honest_run)
    edit_manifest(mixed, lambda m: m["runs"][1].update(claimed=metrics([r["reward"] for r in honest_run])))
    reclaim(mixed)
    code, out = run_cli(capsys, "verify", mixed, "--entries", entries)
    assert code == 1 and "the episodes of training seed 1 are those of training seed 1 of listed entry 'Honest" in out


def test_resubmission_replaces_its_row_and_keeps_the_earlier_version_reachable(bundles, tmp_path, capsys):
    entries, site = tmp_path / "entries.json", tmp_path / "site"
    assert submit(capsys, bundles["honest"], entries, site)[0] == 0
    same_episodes = fresh(bundles, "honest", tmp_path)
    edit_manifest(same_episodes, lambda m: m.update(notes="re-bundled, nothing retrained"))
    code, out = submit(capsys, same_episodes, entries, site)
    assert code == 1 and "[copy] nothing new: every run's episodes equal (exactly) those of the listed version" in out

    # A new version: same name and submitter (whitespace and case aside), new episodes.
    update = fresh(bundles, "starting", tmp_path)
    rename(update, "honest  ppo", "Tests")
    code, out = submit(capsys, update, entries, site)
    assert code == 0 and "note: a new version of listed entry 'Honest PPO' by 'tests'" in out, out
    assert "(1 earlier version kept under it)" in out
    old, new = load_entries(entries)
    (board,) = board_rows([old, new])
    (row,) = board.rows
    assert row.current["id"] == new["id"] and [e["id"] for e in row.earlier] == [old["id"]]
    page = (site / "index.html").read_text()
    assert page.count("<tr ") == 1 and f'data-entry="{new["id"][:16]}"' in page
    assert "1 earlier version" in page and f'<li id="entry-{old["id"][:16]}">' in page
    assert "(2 versions; newest shown)" in (site / "LEADERBOARD.md").read_text()


def test_repository_rows_are_one_per_entry_with_versions():
    entries = load_entries(ENTRIES_PATH)
    boards = board_rows(entries)
    rows = [row for board in boards for row in board.rows]
    identities = {entry_identity(entry) for entry in entries}
    assert len(rows) == len(identities) < len(entries)  # the quick track's re-run gave new versions of its rows
    for row in rows:  # the newest version is shown, the older ones newest first under it
        versions = [entry["id"] for entry in entries if entry_identity(entry) == entry_identity(row.current)]
        assert [row.current["id"], *(e["id"] for e in row.earlier)] == versions[::-1]
    dialogue = next(board for board in boards if board.env_id == "TextGym/Dialogue-v0")
    ppo = [row for row in dialogue.rows if row.current["name"] == "PPO baseline (Dialogue-v0, default)"]
    assert len(ppo) == 1 and len(ppo[0].earlier) >= 1


# -- guard metrics: recomputed, never taken from the bundle ---------------------------------


def test_guard_metrics_are_recomputed_from_the_generations(bundles):
    report = verify_bundle(bundles["honest"])
    assert report.ok
    runs = {}
    for record in read_lines(bundles["honest"]):
        runs.setdefault(record["training_seed"], []).extend(record["generations"])
    texts = [text for replies in runs.values() for text in replies]
    assert report.guard == pytest.approx(
        {
            "distinct_1": np.mean([distinct_n(replies, 1) for replies in runs.values()]),
            "distinct_2": np.mean([distinct_n(replies, 2) for replies in runs.values()]),
            "repetition_2": np.mean([repetition_rate(text, 2) for text in texts]),
            "reply_words": np.mean([len(words(text)) for text in texts]),
        }
    )
    assert "perplexity_median" not in report.guard  # plain verify loads no LM


def test_bundle_lying_about_its_guard_numbers_is_rejected(bundles, tmp_path, capsys):
    liar = fresh(bundles, "love", tmp_path)

    def claim_diverse(records):
        for record in records:
            record["guard"].update(distinct_1=0.9, distinct_2=0.95, repetition_2=0.0)

    edit_records(liar, claim_diverse)
    code, out = run_cli(capsys, "verify", liar, "--entries", tmp_path / "none.json")
    assert code == 1
    assert (
        "[guard] generations.jsonl line 1 (training seed 0, prompt seed 10000): the recorded guard metrics differ"
        in out
    )
    assert "distinct_2 0.95 (recomputed 0.375)" in out and "repetition_2 0.0 (recomputed 0.625)" in out

    # A perplexity claim is not checkable without the LM: it is ignored, never shown.
    honest = fresh(bundles, "honest", tmp_path)
    edit_records(honest, lambda records: [r["guard"].update(perplexity=1.0) for r in records] and None)
    report = verify_bundle(honest)
    assert report.ok and "perplexity_median" not in report.guard


def test_perplexity_is_measured_only_when_verification_loads_the_lm(bundles, monkeypatch):
    import textgym.models
    from textgym.metrics.functional import perplexity
    from textgym.models import load_tokenizer

    def refuse(*args, **kwargs):
        raise AssertionError("plain verify must not load a language model")

    with monkeypatch.context() as patch:
        patch.setattr(textgym.models, "load_shared_causal_lm", refuse)
        assert verify_bundle(bundles["honest"]).ok
    report = verify_bundle(bundles["honest"], perplexity=True)
    assert report.ok and report.guard["perplexity_model"] == "tiny"
    tokenizer = load_tokenizer("tiny")
    records = read_lines(bundles["honest"])
    expected = perplexity(
        [r["generations"][0] for r in records],
        model="tiny",
        contexts=[
            tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in records
        ],
    )
    assert report.guard["perplexity_median"] == pytest.approx(float(np.median(expected)), rel=1e-6)
    assert report.guard["perplexity_mean"] == pytest.approx(float(np.mean(expected)), rel=1e-6)


# -- degenerate text is flagged, never unmarked ----------------------------------------------


def test_degenerate_entry_is_flagged_against_the_starting_policy(bundles, tmp_path, capsys):
    entries, site = tmp_path / "entries.json", tmp_path / "site"
    for key in ("starting", "honest"):
        assert submit(capsys, bundles[key], entries, site)[0] == 0
    code, out = submit(capsys, bundles["love"], entries, site)
    assert code == 0, out  # listed ...
    assert "WARNING: Degenerate text: distinct-1 0.010 and distinct-2 0.012 are under half the starting policy's" in out
    (board,) = board_rows(load_entries(entries))
    by_name = {row.current["name"]: row for row in board.rows}
    assert by_name["Love bot"].degenerate == {"diversity", "repetition"}  # ... but marked
    assert not by_name["Honest PPO"].degenerate and not by_name["Zero-shot LM"].degenerate
    assert board.starting["name"] == "Zero-shot LM" and not board.starting_is_fallback
    start = board.starting["guard"]
    love = by_name["Love bot"].current["guard"]
    assert love["distinct_2"] < DIVERSITY_RATIO * start["distinct_2"]
    assert love["repetition_2"] > start["repetition_2"] + REPETITION_MARGIN
    table = (site / "LEADERBOARD.md").read_text()
    assert "⚠ Degenerate text: distinct-1 0.010" in next(line for line in table.splitlines() if "Love bot" in line)


@pytest.fixture(scope="module")
def love_sentiment(tmp_path_factory):
    """The issue's reward gaming on the real board: the checked-in Sentiment-v0 zero-shot bundle, every generation
    replaced by one string of "love wonderful best" words, rewards and claims made to match.

    Returns the bundle and the zero-shot episodes' guard metrics (what a liar would leave in place).
    """
    bundle = Path(shutil.copytree(QUICK_BUNDLES / "zero-shot__sentiment_v0", tmp_path_factory.mktemp("love") / "b"))
    rename(bundle, "Positive words", "a reward gamer")
    edit_manifest(bundle, lambda m: m["model"].update(algo="ppo"))
    records = read_lines(bundle)
    stale_guards = [dict(record["guard"]) for record in records]
    for record in records:
        record["generations"] = [LOVE]
    rescore_records("TextGym/Sentiment-v0", records)
    (bundle / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    reclaim(bundle)
    return bundle, stale_guards


def test_repository_baselines_are_not_flagged_and_the_love_bundle_is(love_sentiment, tmp_path, capsys):
    love, stale = love_sentiment
    listed = load_entries(ENTRIES_PATH)[:BASELINES]
    assert all("guard" in entry and "content" in entry for entry in listed)
    boards = board_rows(listed)
    assert [row.current["name"] for board in boards for row in board.rows if row.degenerate] == []

    # With the zero-shot episodes' guard numbers left in place, the bundle lies about them: rejected.
    liar = Path(shutil.copytree(love, tmp_path / "liar"))
    edit_records(liar, lambda records: [r.update(guard=g) for r, g in zip(records, stale, strict=True)] and None)
    code, out = run_cli(capsys, "verify", liar)
    assert code == 1 and out.count("[guard]") >= 40 and "distinct_2 0.9" in out

    entries, site = tmp_path / "entries.json", tmp_path / "site"
    entries.write_text(json.dumps({**load_document(ENTRIES_PATH), "entries": listed}))
    code, out = submit(capsys, love, entries, site)
    assert code == 0, out
    assert "mean reward 0.99" in out and "WARNING: Degenerate text" in out
    sentiment = next(board for board in board_rows(load_entries(entries)) if board.env_id == "TextGym/Sentiment-v0")
    top = sentiment.rows[0]
    assert top.current["name"] == "Positive words" and top.current["rescored"]["mean_reward"] > 0.98
    assert top.degenerate == {"diversity", "repetition"} and top.current["guard"]["distinct_2"] < 0.02
    assert [row.current["name"] for row in sentiment.rows if row.degenerate] == ["Positive words"]
    assert sentiment.starting["name"] == "Zero-shot LM, sampled (Sentiment-v0, default)"


def test_degenerate_entry_is_marked_on_the_page_in_headless_chromium(love_sentiment, chromium, tmp_path):
    listed = [entry for entry in load_entries(ENTRIES_PATH)[:BASELINES] if entry["env_id"] == "TextGym/Sentiment-v0"]
    report = verify_bundle(love_sentiment[0], listed=listed)
    assert report.ok, report.summary()
    entries = [*listed, make_entry(report, dt.date(2026, 12, 1))]
    page = tmp_path / "index.html"
    page.write_text(render_html(entries), encoding="utf-8")

    dom = dom_rows(chromium, page.as_uri())
    assert dom.html_attrs.get("data-js") == "ready"
    first = dom.rows[0]
    assert first[0] == "1" and first[1].startswith("Positive wordsby a reward gamer⚠ Degenerate text: distinct-1")
    assert "repetition 0.625 is over the starting policy's 0.029 + 0.3" in first[1]
    assert [row[5][:5] for row in dom.rows] == ["0.012", "0.883", "0.892", "0.964"]  # distinct-2, visible as text
    assert [row[1].count("⚠") for row in dom.rows] == [1, 0, 0, 0]
    assert all("Degenerate" not in row[1] for row in dom.rows[1:])
    # Sorting by another column keeps the mark with its row.
    by_distinct = dom_rows(chromium, page.as_uri() + "?sort=distinct&dir=asc")
    assert by_distinct.rows[0][1].startswith("Positive words") and "⚠ Degenerate text" in by_distinct.rows[0][1]

    shot = tmp_path / "degenerate.png"
    run_chromium(chromium, "--hide-scrollbars", "--window-size=1400,900", f"--screenshot={shot}", page.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1400, 900)


# -- migration of the format-1 entries --------------------------------------------------------


def test_migration_adds_guard_and_content_and_changes_nothing_else(bundles, tmp_path, capsys):
    reports = [verify_bundle(bundles[key]) for key in ("starting", "honest")]
    v2 = [make_entry(report, dt.date(2025, 1, 1)) for report in reports]
    v1 = [{k: v for k, v in entry.items() if k not in ("guard", "content")} for entry in v2]
    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps({"format_version": 1, "entries": v1}))
    before = entries.read_text()

    with pytest.raises(EntriesError, match="is of format 1.*migrate it first"):
        append_entry(make_entry(verify_bundle(bundles["love"])), entries)
    code, out = run_cli(capsys, "migrate", bundles["starting"], "--entries", entries, "--site", tmp_path / "site")
    assert code == 1 and "1 entries have no bundle among those given" in out and "'Honest PPO'" in out
    assert entries.read_text() == before

    argv = ["migrate", bundles["starting"], bundles["honest"], bundles["love"], "--date", "2025-02-03"]
    code, out = run_cli(capsys, *argv, "--entries", entries, "--site", tmp_path / "site")
    assert code == 0, out
    document = load_document(entries)
    assert document["format_version"] == 2 and document["entries"] == v2  # the love bundle is listed nowhere: ignored
    assert document["migrations"][0]["date"] == "2025-02-03" and document["migrations"][0]["entries"] == 2
    with pytest.raises(EntriesError, match="only a format-1 entries file can be migrated"):
        migrate_to_v2(document, reports, dt.date(2025, 2, 4))


def test_repository_entries_were_migrated_and_match_the_checked_in_bundles():
    document = load_document(ENTRIES_PATH)
    assert document["format_version"] == 2 and document["migrations"][0]["entries"] == 40
    by_episodes = {json.dumps(entry["content"], sort_keys=True): entry for entry in document["entries"]}
    # A token-level and a candidate-level bundle of the latest quick track, both listed by their episodes: a re-run
    # whose episodes equal a listed entry's (the zero-shot LM, the same sampling as before) is refused as nothing
    # new, and that entry stands for it; the DQN head was trained anew and listed itself.
    for name in ("zero-shot__sentiment_v0", "dqn__sentimentcandidate_v0"):
        report = verify_bundle(QUICK_BUNDLES / name)
        entry = by_episodes[json.dumps(report.content, sort_keys=True)]
        assert entry["guard"] == report.guard and entry["env_id"] == report.bundle.manifest["env"]["id"]
        if name.startswith("dqn"):
            assert entry["id"] == report.bundle.digest


# -- crash safety: SIGKILL while writing -----------------------------------------------------


def child(code):
    """A Python child process with this worktree first on its path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)


def assert_old_or_new(path, old, new):
    text = path.read_text(encoding="utf-8")  # never missing, never empty
    value = safejson.loads(text, str(path))  # never cut short
    assert value in (old, new), f"{path} is neither the old nor the new document"
    return value == new


def test_sigkill_during_submit_leaves_entries_old_or_new(bundles, tmp_path):
    entries, site = tmp_path / "entries.json", tmp_path / "site"
    shutil.copyfile(ENTRIES_PATH, entries)
    old = load_document(entries)
    command = (
        "import sys\nfrom leaderboard.cli import main\n"
        f"sys.exit(main(['submit', {str(bundles['honest'])!r}, '--entries', {str(entries)!r}, "
        f"'--site', {str(site)!r}, '--date', '2025-05-01']))\n"
    )
    # One uninterrupted submit: the new document, and when the file is replaced.
    started = time.monotonic()
    process = child(command)
    inode, replaced = entries.stat().st_ino, None
    while process.poll() is None:
        if replaced is None and entries.stat().st_ino != inode:
            replaced = time.monotonic() - started
        time.sleep(0.002)
    total = time.monotonic() - started
    assert process.returncode == 0 and replaced is not None
    new = load_document(entries)
    assert new["entries"][:-1] == old["entries"] and len(new["entries"]) == len(old["entries"]) + 1

    rng = random.Random(7)
    outcomes = []
    for trial in range(4):
        atomic_write(entries, safejson.dumps(old, indent=1) + "\n")
        # Half the kills anywhere in the run, half around the moment the file is replaced.
        delay = rng.uniform(0, total) if trial % 2 else max(0.0, rng.uniform(replaced - 0.15, replaced + 0.02))
        process = child(command)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        outcomes.append(assert_old_or_new(entries, old, new))
    assert not all(outcomes) and math.isfinite(total)


def test_quick_track_skips_a_bundle_the_leaderboard_refuses(bundles, tmp_path, capsys, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("quick_track", ROOT / "benchmarks" / "quick_track.py")
    quick_track = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quick_track", quick_track)  # dataclasses look their module up there
    spec.loader.exec_module(quick_track)
    copy = fresh(bundles, "honest", tmp_path)
    rename(copy, "DQN that never moved", "tests")
    rows = [
        {"bundle": name, "verified": True, "report": verify_bundle(path)}
        for name, path in (("honest", bundles["honest"]), ("copy", copy))
    ]
    assert quick_track.submit_rows(rows, tmp_path / "entries.json", tmp_path / "site") == 1
    assert "copy: not added: the episodes of training seeds 0, 1, 2 are those of" in capsys.readouterr().out
    assert [entry["name"] for entry in load_entries(tmp_path / "entries.json")] == ["Honest PPO"]
