"""Helpers the leaderboard tests share: scripted bundles, editing them, synthetic entries, headless Chromium."""

import hashlib
import html.parser
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np

import textgym
from leaderboard.bundle import make_bundle
from leaderboard.cli import main
from leaderboard.tracks import TRACKS
from leaderboard.verify import verify_bundle
from textgym.wrappers import RecordGenerations
from textgym.wrappers.recorder import read_records

ROOT = Path(__file__).resolve().parents[1]
QUICK = TRACKS["quick"]
ENV = "TextGym/SentimentUtterance-v0"
PHRASES = (
    "was wonderful and moving.",
    "was dull.",
    "felt long, but the cast was great.",
    "was a mess.",
    "was fine, nothing more.",
    "made me laugh a lot.",
    "was boring and predictable.",
    "is one I will remember.",
)
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\"> & | *x* [l](u)"


# -- building and editing bundles ---------------------------------------------------------


def scripted_records(directory, env_id, training_seed, reply):
    """Play the track's prompts with scripted replies through the real env and recorder."""
    path = Path(directory) / f"recorded-{training_seed}.jsonl"
    env = RecordGenerations(gym.make(env_id, model="tiny", split=QUICK.split), path)
    base = env.unwrapped
    end = min(base.end_ids)
    for seed in QUICK.prompt_seeds:
        env.reset(seed=seed)
        ids = base.tokenizer(reply(training_seed, seed), add_special_tokens=False)["input_ids"]
        ids = ids[: base.max_reply_tokens - 1]
        env.step(np.array(ids + [end] * (base.max_reply_tokens - len(ids)), dtype=np.int64))
    env.close()
    return read_records(path)


def phrase(training_seed, seed):
    return PHRASES[(seed * 5 + training_seed * 3) % len(PHRASES)]


def write_bundle(out, runs, name="Scripted replies", model_id="tiny", algo="scripted"):
    return make_bundle(
        out,
        runs,
        name=name,
        submitter="tests",
        model={"id": model_id, "revision": "test", "algo": algo, "decoding": "sample"},
        compute={"hardware": "cpu", "wall_time_s": 1.5, "env_steps": 0},
    )


def edit_manifest(bundle, change):
    manifest = json.loads((bundle / "bundle.json").read_text())
    change(manifest)
    (bundle / "bundle.json").write_text(json.dumps(manifest))


def read_lines(bundle):
    return [json.loads(line) for line in (bundle / "generations.jsonl").read_text().splitlines() if line.strip()]


def write_lines(bundle, records):
    (bundle / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def edit_records(bundle, change):
    records = read_lines(bundle)
    records = change(records) or records
    write_lines(bundle, records)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().out


def assert_rejected(bundle, code, *phrases):
    report = verify_bundle(bundle)
    out = report.summary()
    assert not report.ok and out.startswith("REJECTED")
    assert code in report.codes(), out
    for text in phrases:
        assert text in out, out
    return out


# -- entries and the page in a real browser -----------------------------------------------


def synthetic_entry(name, mean, date, level="rescored", hardware="cpu", guard=None, algo="ppo"):
    digest = hashlib.sha256(name.encode()).hexdigest()
    entry = {
        "id": digest,
        "submitted": date,
        "name": name,
        "submitter": "tests",
        "env_id": ENV,
        "env_version": 0,
        "track": "quick",
        "textgym_version": textgym.__version__,
        "model": {"id": "tiny", "revision": "test", "algo": algo, "decoding": "sample"},
        "compute": {"hardware": hardware, "wall_time_s": 3600.0 * mean, "env_steps": 4096},
        "training_seeds": [0, 1, 2],
        "claimed": {"mean_reward": mean, "ci95": [mean - 0.1, mean + 0.1], "episodes": 96},
        "rescored": {"mean_reward": mean, "ci95": [mean - 0.1, mean + 0.1], "episodes": 96},
        "verification": {"level": level, "reward_atol": 1e-4},
        "guard": guard or {"distinct_1": 0.5, "distinct_2": 0.9, "repetition_2": 0.03, "reply_words": 20.0},
        "content": {
            "runs": [
                {
                    "training_seed": s,
                    "sha256": digest,
                    "normalized_sha256": hashlib.sha256(f"{name}{s}".encode()).hexdigest(),
                }
                for s in range(3)
            ]
        },
    }
    if level == "rerun":
        entry["verification"]["rerun"] = {
            "k": 3.0,
            "episodes": 32,
            "secret_seed_sha256": "0" * 64,
            "runs": [{"training_seed": 0, "mean_reward": mean, "stderr": 0.05, "accepted_range": [0.0, 1.0]}],
        }
    return entry


class RowReader(html.parser.HTMLParser):
    """Rows of the first leaderboard table in a DOM dump: the text of each cell."""

    def __init__(self):
        super().__init__()
        self.rows, self.cell, self.depth, self.tables, self.elements = [], None, 0, 0, []
        self.html_attrs, self.table_attrs, self.title = {}, {}, []
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.elements.append(tag)
        attrs = dict(attrs)
        if tag == "html":
            self.html_attrs = attrs
        if tag == "title":
            self._in_title = True
        if tag == "table":
            self.tables += 1
            if self.tables == 1:
                self.table_attrs = attrs
        if self.tables == 1 and tag == "tr" and "data-entry" in attrs:
            self.rows.append([])
        if self.tables == 1 and tag == "td" and self.rows:
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag == "td" and self.cell is not None:
            self.rows[-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data):
        if self._in_title:
            self.title.append(data)
        if self.cell is not None:
            self.cell.append(data)


def find_chromium():
    """The path of a Chromium on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(chromium, *args):
    with tempfile.TemporaryDirectory() as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def dom_rows(chromium, url):
    reader = RowReader()
    reader.feed(run_chromium(chromium, "--virtual-time-budget=2000", "--dump-dom", url))
    return reader
