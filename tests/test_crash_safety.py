"""Crash safety: files are old or new, never torn; a run killed at any moment resumes exactly."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import TINY_RUN

from baselines.train import main as train_main
from textgym import files
from textgym.wrappers import RecordGenerations
from textgym.wrappers.recorder import read_records

ROOT = Path(__file__).resolve().parent.parent


def child_env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}


# -- whole files ---------------------------------------------------------------------------


def test_atomic_write_replaces_whole_files_and_a_failed_write_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "summary.json"
    files.atomic_write(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}' and oct(path.stat().st_mode & 0o777) == oct(0o666 & ~files._UMASK)
    path.chmod(0o640)
    files.atomic_write(path, b"new bytes")
    assert path.read_bytes() == b"new bytes" and path.stat().st_mode & 0o777 == 0o640  # permissions kept

    def crash(*_):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        files.atomic_write(path, "never seen")
    assert path.read_bytes() == b"new bytes"
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]  # no temporary file left


WRITER = """
import sys
from textgym.files import atomic_write
path, size = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
for i in range(1_000_000):
    atomic_write(path, bytes([65 + i % 2]) * size)
"""


def test_sigkill_during_atomic_writes_leaves_the_old_or_the_new_file(tmp_path):
    """What entries.json, summary.json and config.json rely on: a kill at a random moment never tears the file."""
    path = tmp_path / "entries.json"
    size = 4 << 20
    rng = random.Random(0)
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(size)], env=child_env(), stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.05, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait()
        if path.exists():  # the first rename may not have happened yet
            data = path.read_bytes()
            assert data in (b"A" * size, b"B" * size), f"torn file of {len(data)} bytes"
    assert path.exists()


# -- directories ----------------------------------------------------------------------------


def test_replace_directory_switches_versions_atomically_and_cleans_up(tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()  # a real directory, as format-1 runs left it
    (target / "old.txt").write_text("v0")
    first = files.new_version_directory(target)
    (first / "data.txt").write_text("v1")
    files.replace_directory(first, target)
    assert target.is_symlink() and (target / "data.txt").read_text() == "v1"
    assert os.readlink(target) == first.name  # relative: the run directory can be moved
    interrupted = files.new_version_directory(target)  # a write killed before its switch
    (interrupted / "data.txt").write_text("half")
    assert (target / "data.txt").read_text() == "v1"
    second = files.new_version_directory(target)
    (second / "data.txt").write_text("v2")
    files.replace_directory(second, target)
    assert (target / "data.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["checkpoint", second.name])
    with pytest.raises(ValueError, match="not a version directory"):
        files.replace_directory(tmp_path / "elsewhere", target)


def test_replace_directory_takes_a_relative_target_with_an_absolute_version(tmp_path, monkeypatch):
    # Python 3.12's mkdtemp returns an absolute path for a relative dir: `--out runs/x` on 3.12
    # gave an absolute version beside a relative target, and the first checkpoint was refused.
    monkeypatch.chdir(tmp_path)
    target = Path("runs") / "checkpoint"
    version = files.new_version_directory(target).absolute()
    (version / "data.txt").write_text("v1")
    files.replace_directory(version, target)
    assert (tmp_path / "runs" / "checkpoint" / "data.txt").read_text() == "v1"
    relative_version = Path(os.path.relpath(files.new_version_directory(target)))
    (relative_version / "data.txt").write_text("v2")
    files.replace_directory(relative_version, target.absolute())
    assert (target / "data.txt").read_text() == "v2"
    with pytest.raises(ValueError, match="not a version directory"):
        files.replace_directory(tmp_path / ".checkpoint.v1-x", target)


# -- append-only JSON Lines -----------------------------------------------------------------


def test_a_torn_last_line_is_cut_on_reopening_and_skipped_by_readers(tmp_path, tiny_model):
    import gymnasium as gym

    path = tmp_path / "gens.jsonl"
    path.write_text('{"reward": 1.0}\n{"reward": 2.0}\n{"rew')  # a crash cut the third write
    with pytest.warns(UserWarning, match="skipped a torn last line"):
        assert read_records(path) == [{"reward": 1.0}, {"reward": 2.0}]
    env = RecordGenerations(gym.make("TextGym/Sentiment-v0", model="tiny", max_reply_tokens=2), path)
    env.reset(seed=5)
    done = False
    while not done:
        *_, terminated, truncated, _ = env.step(2)  # the end token
        done = terminated or truncated
    env.close()
    lines = path.read_text().splitlines()
    assert lines[:2] == ['{"reward": 1.0}', '{"reward": 2.0}'] and len(lines) == 3
    assert json.loads(lines[2])["seed"] == 5  # the new record follows the last complete one

    path.write_text('{"a": 1}\n{"b": 2}')  # a whole record that lost only its newline is kept
    assert files.repair_jsonl_tail(path) == 0 and path.read_text() == '{"a": 1}\n{"b": 2}\n'
    path.write_text("no newline and no json")
    with pytest.warns(RuntimeWarning, match="cut a torn last line of 22 bytes"):
        assert files.repair_jsonl_tail(path) == 22
    assert path.read_bytes() == b""
    with files.AppendOnlyFile(path) as handle, pytest.raises(ValueError, match="whole lines"):
        handle.write('{"x": 1}')


# -- training runs killed at any moment -----------------------------------------------------

RUN = [*TINY_RUN, "--learning-rate", "1e-3", "--sample-every", "0", "--total-timesteps", "64", "--eval-every", "16"]

#: baselines.train, stopping (reading a line from stdin) in the middle of each checkpoint write, after
#: policy.safetensors and before the rest and the switch, and again after each completed switch.
HOOKED_TRAIN = textwrap.dedent(
    """
    import sys
    import baselines.checkpoint as checkpoint
    import textgym.files as files

    real_save_file, real_replace = checkpoint.save_file, files.replace_directory

    def save_file(tensors, path, *args, **kwargs):
        real_save_file(tensors, path, *args, **kwargs)
        if path.endswith("policy.safetensors"):
            print("WRITING", flush=True)
            sys.stdin.readline()

    def replace_directory(version, target):
        result = real_replace(version, target)
        print("SAVED", flush=True)
        sys.stdin.readline()
        return result

    checkpoint.save_file, files.replace_directory = save_file, replace_directory
    from baselines.train import main
    sys.exit(main(sys.argv[1:]))
    """
)


def train(*args):
    result = subprocess.run(
        [sys.executable, "-m", "baselines.train", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def complete_checkpoint(run):
    """The step count of ``run``'s checkpoint, after checking that every file of it is whole."""
    directory = run / "checkpoint"
    meta = json.loads((directory / "checkpoint.json").read_text())
    assert load_file(directory / "policy.safetensors") and load_file(directory / "optimizer.safetensors") is not None
    state = json.loads((directory / "resume.json").read_text())
    assert state["eval_generations_bytes"] <= (run / "eval_generations.jsonl").stat().st_size
    return meta["num_timesteps"]


def outcome(run):
    """What a finished run produced, without timings and the run's own path."""
    summary = json.loads((run / "summary.json").read_text())
    for key in ("wall_time_s", "train_time_s", "env_steps_per_s"):
        summary.pop(key)
    summary["config"].pop("out")
    meta = json.loads((run / "checkpoint" / "checkpoint.json").read_text())
    meta["config"].pop("out")
    weights = load_file(run / "checkpoint" / "policy.safetensors")
    optimizer = load_file(run / "checkpoint" / "optimizer.safetensors")
    return summary, meta, weights, optimizer, (run / "eval_generations.jsonl").read_text()


def test_sigkill_inside_a_checkpoint_write_then_resume_equals_a_resume_from_a_pristine_copy(tmp_path, tiny_model):
    killed, pristine = tmp_path / "killed", tmp_path / "pristine"
    saves = 0
    with subprocess.Popen(
        [sys.executable, "-c", HOOKED_TRAIN, *RUN, "--out", str(killed)],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as child:
        try:
            for line in child.stdout:
                if line == "SAVED\n":
                    saves += 1
                    if saves == 2:  # the checkpoint of step 32 is complete: copy the run as it is now
                        shutil.copytree(killed, pristine, symlinks=True)
                elif line == "WRITING\n" and saves == 2:
                    child.send_signal(signal.SIGKILL)  # policy.safetensors of step 48 written, the rest not
                    break
                if line in ("SAVED\n", "WRITING\n"):
                    child.stdin.write("\n")
                    child.stdin.flush()
        finally:
            child.kill()
    assert saves == 2 and pristine.exists(), "the run ended before the kill"
    # The checkpoint is still the complete one of step 32; the half-written step-48 version lies beside it.
    assert complete_checkpoint(killed) == 32
    assert [p for p in killed.glob(".checkpoint.v*") if p != (killed / "checkpoint").resolve()]
    # The killed run evaluated at step 48 before its checkpoint write: records the resume must cut.
    assert (killed / "eval_generations.jsonl").stat().st_size > (pristine / "eval_generations.jsonl").stat().st_size
    assert not (killed / "summary.json").exists()

    step32 = load_file(pristine / "checkpoint" / "policy.safetensors")
    train("--resume", "--out", str(killed))  # in a new process, as after a crash
    assert train_main(["--resume", "--out", str(pristine)]) == 0  # in this one: no state may leak between them
    summary, meta, weights, optimizer, records = outcome(killed)
    expected = outcome(pristine)
    assert summary == expected[0] and meta == expected[1] and records == expected[4]
    assert weights.keys() == expected[2].keys() and optimizer.keys() == expected[3].keys()
    for name in weights:
        assert torch.equal(weights[name], expected[2][name]), name
    for name in optimizer:
        assert torch.equal(optimizer[name], expected[3][name]), name
    assert summary["env_steps"] == 64 and [p["step"] for p in summary["curve"]] == [0, 16, 32, 48, 64]
    assert len(records.splitlines()) == 2 * 5  # initial, steps 16, 32, 48, final: two episodes each
    # Training went on after the resume: the weights moved from those of step 32.
    assert summary["kl"] and any(not torch.equal(weights[name], step32[name]) for name in weights)


def test_a_run_killed_at_random_moments_keeps_a_complete_checkpoint_and_resumes_to_the_end(tmp_path, tiny_model):
    run, rng = tmp_path / "run", random.Random(1)
    for attempt in range(2):  # killed twice (the second time in its resumed part), then left to finish
        link = run / "checkpoint"
        version = os.readlink(link) if attempt else None
        with subprocess.Popen(
            [sys.executable, "-m", "baselines.train", *(["--resume"] if attempt else RUN), "--out", str(run)],
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as child:
            # Training has begun once this process has written a checkpoint: then kill at a random moment.
            while child.poll() is None and (not link.is_symlink() or os.readlink(link) == version):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
            child.send_signal(signal.SIGKILL)
        assert complete_checkpoint(run) in (16, 32, 48, 64)
    assert train_main(["--resume", "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 64 and complete_checkpoint(run) == 64
    assert [p["step"] for p in summary["curve"]] == [0, 16, 32, 48, 64]
    records = read_records(run / "eval_generations.jsonl")
    assert len(records) == 10 and [r["seed"] for r in records] == [10_000, 10_001] * 5
