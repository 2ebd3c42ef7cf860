"""What identifies a leaderboard entry: its episodes' content fingerprints, its row identity, copies of listed entries.

Entries are identified by the content of their episodes, not by their manifest: two
runs whose generations are equal, exactly or after :func:`textgym.text.normalize_text`,
are the same run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from leaderboard import safejson
from textgym.text import normalize_text


def _digest(env_id: str, episodes: Sequence[tuple[int, Sequence[str]]]) -> str:
    text = safejson.dumps([env_id, [[seed, list(generations)] for seed, generations in episodes]])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_fingerprints(env_id: str, runs: Mapping[int, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """Fingerprints of a bundle's episodes, one pair per run: what identifies an entry, whatever its manifest says.

    Each run (training seed) is fingerprinted by SHA-256 over the env id and its episodes'
    (prompt seed, generations) in prompt-seed order: ``sha256`` of the generations as
    written, ``normalized_sha256`` after :func:`normalize_text`. The training seed itself
    is left out, so relabelling or reordering runs changes nothing.

    Returns:
        ``{"runs": [{"training_seed", "sha256", "normalized_sha256"}, ...]}`` by training seed.
    """
    fingerprints = []
    for training_seed in sorted(runs):
        episodes = sorted((record["seed"], record["generations"]) for record in runs[training_seed])
        normalized = [(seed, [normalize_text(text) for text in generations]) for seed, generations in episodes]
        fingerprints.append(
            {
                "training_seed": training_seed,
                "sha256": _digest(env_id, episodes),
                "normalized_sha256": _digest(env_id, normalized),
            }
        )
    return {"runs": fingerprints}


def identity(env_id: str, track: str, submitter: str, name: str) -> tuple[str, str, str, str]:
    """The leaderboard row an entry belongs to: env id, track, submitter and name (whitespace and case ignored).

    A submission with the identity of a listed entry is a new version of that entry.
    """
    return env_id, track, normalize_text(submitter), normalize_text(name)


def bundle_identity(manifest: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """:func:`identity` of the entry a bundle would become."""
    return identity(manifest["env"]["id"], manifest["track"]["name"], manifest["submitter"], manifest["name"])


def entry_identity(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """:func:`identity` of a listed entry."""
    return identity(entry["env_id"], entry["track"], entry["submitter"], entry["name"])


def describe_entry(entry: Mapping[str, Any]) -> str:
    """A listed entry in a sentence: its name, submitter, id, env and date."""
    return (
        f"entry {entry['name']!r:.120} by {entry['submitter']!r:.80} (id {entry['id'][:12]}, {entry['env_id']}, "
        f"submitted {entry['submitted']})"
    )


def describe_guard(text: Mapping[str, Any]) -> str:
    """An entry's guard metrics in a sentence."""
    line = (
        f"distinct-2 {text['distinct_2']:.3f} (distinct-1 {text['distinct_1']:.3f}), repetition "
        f"{text['repetition_2']:.3f}, {text['reply_words']:.1f} words per reply"
    )
    if text.get("perplexity_median") is not None:
        line += f", perplexity {text['perplexity_median']:.1f} (median) under {text['perplexity_model']!r}"
    return line


def _seeds(seeds: Sequence[int]) -> str:
    return f"training seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


@dataclass(frozen=True)
class Copy:
    """A listed entry whose episodes a would-be entry repeats.

    Attributes:
        entry: The listed entry.
        runs: The would-be entry's training seeds whose episodes are the listed entry's.
        source_runs: The listed entry's training seeds they repeat.
        exact: True when the generations are the same as written, False when only after normalisation.
        same_entry: True when the listed entry is an earlier version of the same entry (same :func:`identity`).
    """

    entry: dict[str, Any]
    runs: tuple[int, ...]
    source_runs: tuple[int, ...]
    exact: bool
    same_entry: bool

    def sentence(self) -> str:
        """The reason, naming the listed entry."""
        how = "exactly" if self.exact else "after whitespace and case normalisation"
        if self.same_entry:
            return (
                f"nothing new: every run's episodes equal ({how}) those of the listed version of this entry, "
                f"{describe_entry(self.entry)}"
            )
        return (
            f"the episodes of {_seeds(self.runs)} are those of {_seeds(self.source_runs)} of listed "
            f"{describe_entry(self.entry)}, {how}; entries are identified by their episodes, not by the name or "
            "submitter in bundle.json"
        )


def find_copies(
    env_id: str,
    own: tuple[str, str, str, str],
    digest: str,
    content: Mapping[str, Any],
    listed: Sequence[Mapping[str, Any]],
) -> tuple[list[Copy], dict[str, Any] | None]:
    """The listed entries whose episodes a would-be entry repeats, run for run.

    A run copies a listed run of the same env when their fingerprints
    (:func:`content_fingerprints`) match, exactly or after whitespace and case
    normalisation. Runs shared with an earlier version of the same entry (same
    :func:`identity`) are allowed, since a deterministic run can be reproduced, but not all
    of them: a version must differ from the one it updates. The very same bundle (same
    files, ``digest``) is not a copy: it is returned as the second item.

    Args:
        env_id: The would-be entry's env id.
        own: Its :func:`identity`.
        digest: Its bundle's digest (the entry id).
        content: Its :func:`content_fingerprints`.
        listed: The listed entries, oldest first.

    Returns:
        The copies found (none when the episodes are new) and the listed entry that is this
        very bundle, if any.
    """
    copies, same_bundle = [], None
    runs = content["runs"]
    for entry in listed:
        if entry["env_id"] != env_id or "content" not in entry:
            continue
        if entry["id"] == digest:
            same_bundle = dict(entry)
            continue
        theirs = {run["normalized_sha256"]: run for run in entry["content"]["runs"]}
        copied = [run for run in runs if run["normalized_sha256"] in theirs]
        if not copied:
            continue
        same_entry = entry_identity(entry) == own
        everything = sorted(r["normalized_sha256"] for r in runs) == sorted(
            r["normalized_sha256"] for r in entry["content"]["runs"]
        )
        if same_entry and not everything:
            continue
        copies.append(
            Copy(
                entry=dict(entry),
                runs=tuple(run["training_seed"] for run in copied),
                source_runs=tuple(sorted({theirs[run["normalized_sha256"]]["training_seed"] for run in copied})),
                exact=all(theirs[run["normalized_sha256"]]["sha256"] == run["sha256"] for run in copied),
                same_entry=same_entry,
            )
        )
    return copies, same_bundle
