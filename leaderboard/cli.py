"""``textgym-leaderboard``: bundle, verify, submit and render leaderboard entries.

    textgym-leaderboard bundle RUN_DIR [RUN_DIR ...] --out BUNDLE   # baselines.train runs -> a bundle
    textgym-leaderboard verify BUNDLE                              # re-score; exit 0 only if all holds
    textgym-leaderboard verify BUNDLE --perplexity                 # also measure perplexity under the env's LM
    textgym-leaderboard verify BUNDLE --rerun --secret-seed N       # also re-run the checkpoints (and perplexity)
    textgym-leaderboard submit BUNDLE [--rerun --secret-seed N]     # verify, append the entry, re-render
    textgym-leaderboard render                                     # entries.json -> site/index.html + LEADERBOARD.md
    textgym-leaderboard migrate BUNDLE [BUNDLE ...]                # format-1 entries.json -> format 2, re-verified

Exit codes: 0 success, 1 the bundle (or the request) was rejected, 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from leaderboard.entries import Row
    from leaderboard.report import Report

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SECRET_SEED_ENV = "TEXTGYM_LEADERBOARD_SECRET_SEED"


def _parser() -> argparse.ArgumentParser:
    from leaderboard.entries import ENTRIES_PATH
    from leaderboard.render import SITE_DIR

    parser = argparse.ArgumentParser(
        prog="textgym-leaderboard", description="The TextGym leaderboard: verify result bundles and render the page."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add_verify_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("bundle", help="the bundle directory (bundle.json, generations.jsonl, checkpoint/)")
        command.add_argument(
            "--rerun", action="store_true", help="also re-run the bundle's checkpoints on held-out prompts"
        )
        command.add_argument(
            "--secret-seed",
            type=int,
            default=None,
            help=f"first prompt seed of the held-out set (or set ${SECRET_SEED_ENV}); keep it out of the repository",
        )
        command.add_argument("--rerun-episodes", type=int, default=None, help="episodes per run (default: the track's)")
        command.add_argument("--device", default="auto", help="device of the re-run: auto, cpu or cuda")
        command.add_argument(
            "--ray-address", default=None, help="re-run each run as a Ray task on this cluster (auto or HOST:PORT)"
        )
        command.add_argument(
            "--perplexity",
            action="store_true",
            help="also measure the replies' perplexity under the env's LM (loads it; --rerun implies it)",
        )
        command.add_argument(
            "--entries",
            default=str(ENTRIES_PATH),
            help="the listed entries, checked for copies and the starting policy (default: %(default)s)",
        )

    verify = commands.add_parser("verify", help="verify a bundle; exit code 0 only if everything holds")
    add_verify_options(verify)

    submit = commands.add_parser("submit", help="verify a bundle, add its entry and re-render the site")
    add_verify_options(submit)
    submit.add_argument("--site", default=str(SITE_DIR), help="where to render (default: %(default)s)")
    submit.add_argument("--date", default=None, help="submission date YYYY-MM-DD (default: today, UTC)")

    migrate = commands.add_parser(
        "migrate", help="move a format-1 entries file to format 2 by re-verifying each entry's bundle"
    )
    migrate.add_argument("bundles", nargs="+", metavar="BUNDLE", help="the bundles of the listed entries")
    migrate.add_argument("--entries", default=str(ENTRIES_PATH), help="the entries file (default: %(default)s)")
    migrate.add_argument("--site", default=str(SITE_DIR), help="where to render (default: %(default)s)")
    migrate.add_argument("--date", default=None, help="migration date YYYY-MM-DD (default: today, UTC)")

    render = commands.add_parser("render", help="render the entries to HTML and Markdown")
    render.add_argument("--entries", default=str(ENTRIES_PATH), help="the entries file (default: %(default)s)")
    render.add_argument("--site", default=str(SITE_DIR), help="output directory (default: %(default)s)")

    bundle = commands.add_parser("bundle", help="turn baselines.train run directories into a bundle")
    bundle.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="one baselines.train run per training seed")
    bundle.add_argument("--out", required=True, help="the bundle directory to create")
    bundle.add_argument("--track", default="quick", help="the track claimed (default: %(default)s)")
    bundle.add_argument("--name", default=None, help="display name of the entry")
    bundle.add_argument("--submitter", default="textgym baselines", help="who submits it (default: %(default)s)")
    bundle.add_argument("--model-revision", default=None, help="weights revision (default: from the model name)")
    bundle.add_argument("--hardware", default=None, help="hardware used, e.g. '1x H100' (default: the runs' device)")
    bundle.add_argument("--notes", default=None, help="free-text notes")
    bundle.add_argument("--no-checkpoint", action="store_true", help="leave the checkpoints out (no re-run possible)")
    bundle.add_argument(
        "--evaluation",
        default="final",
        choices=["final", "initial"],
        help="bundle the runs' final evaluation, or their initial one (the untrained starting policy)",
    )
    return parser


def _secret_seed(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int | None:
    if not args.rerun:
        if args.secret_seed is not None:
            parser.error("--secret-seed is only used with --rerun")
        return None
    seed = args.secret_seed
    if seed is None and os.environ.get(SECRET_SEED_ENV, "").strip():
        try:
            seed = int(os.environ[SECRET_SEED_ENV])
        except ValueError:
            parser.error(f"${SECRET_SEED_ENV} must be an integer")
    if seed is None:
        parser.error(f"--rerun needs --secret-seed N (or ${SECRET_SEED_ENV}), a seed kept out of the repository")
    return seed


def _date(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dt.date | None:
    try:
        return dt.date.fromisoformat(args.date) if args.date else None
    except ValueError:
        parser.error(f"--date must be YYYY-MM-DD, got {args.date!r}")


def _verify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[Report, list[dict]]:
    """Verify the bundle against the listed entries; return the report and those entries."""
    from leaderboard.entries import EntriesError, load_document
    from leaderboard.verify import verify_bundle

    secret_seed = _secret_seed(args, parser)
    try:
        document = load_document(args.entries)
    except EntriesError as error:
        print(f"{args.command}: the listed entries cannot be read: {error}")
        raise SystemExit(1) from error
    listed = document["entries"]
    if document["format_version"] == 1 and listed:
        print(f"{args.command}: note: {args.entries} is of format 1; copies are not checked until it is migrated")
    report = verify_bundle(args.bundle, listed=listed, perplexity=args.perplexity and secret_seed is None)
    if report.ok and secret_seed is not None and report.bundle is not None:
        from leaderboard.rerun import rerun_bundle
        from leaderboard.verify import measure_perplexity

        rerun_bundle(
            report.bundle,
            report,
            secret_seed,
            episodes=args.rerun_episodes,
            device=args.device,
            ray_address=args.ray_address,
        )
        if report.ok:  # the re-run loaded the LMs anyway
            from leaderboard.tracks import effective_env_kwargs

            env = report.bundle.manifest["env"]
            measure_perplexity(report, effective_env_kwargs(env["id"], env["kwargs"])["model"])
    return report, listed


def _row_of(report: Report, listed: list[dict]) -> Row | None:
    """The row the bundle's entry would have among the listed entries (for its flags)."""
    from leaderboard.entries import board_rows, make_entry

    if not report.ok or report.listed_as is not None:
        return None
    entry = make_entry(report)
    for board in board_rows([*listed, entry]):
        for row in board.rows:
            if row.current["id"] == entry["id"]:
                return row
    return None


def _print_verdict(args: argparse.Namespace, report: Report, listed: list[dict]) -> None:
    print(f"verify {args.bundle}: {report.summary()}")
    row = _row_of(report, listed)
    for _, flag in row.flags if row else ():
        print(f"WARNING: {flag}")
    if row is not None and row.earlier:
        from leaderboard.copies import describe_entry

        count = len(row.earlier)
        print(
            f"note: a new version of listed {describe_entry(row.earlier[0])}; it replaces that row on the page "
            f"({count} earlier version{'s' if count > 1 else ''} kept under it)"
        )


def _render(entries_of: Callable[[], list[dict]], site: str, failed: str, done: str) -> int:
    """Get the entries (an ``EntriesError`` is printed after ``failed``), render the site and print ``done``.

    ``done`` is formatted with ``count`` (entries), ``page`` and ``table`` (the written files).
    """
    from leaderboard.entries import EntriesError
    from leaderboard.render import write_site

    try:
        entries = entries_of()
    except EntriesError as error:
        print(f"{failed}: {error}")
        return 1
    page, table = write_site(entries, site)
    print(done.format(count=len(entries), page=page, table=table))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "verify":
        report, listed = _verify(args, parser)
        _print_verdict(args, report, listed)
        return 0 if report.ok else 1
    if args.command == "submit":
        from leaderboard.entries import EntriesError, append_entry, make_entry
        from leaderboard.render import write_site

        date = _date(args, parser)
        report, listed = _verify(args, parser)
        _print_verdict(args, report, listed)
        if not report.ok:
            print("submit: not added to the leaderboard")
            return 1
        try:
            entries = append_entry(make_entry(report, date), args.entries)
        except EntriesError as error:
            print(f"submit: not added: {error}")
            return 1
        page, table = write_site(entries, args.site)
        level = "re-run" if report.rerun else "re-scored"
        print(
            f"submit: added entry {report.bundle.digest[:16]} ({level}) to {args.entries}; rendered {page} and {table}"
        )
        return 0
    if args.command == "migrate":
        from leaderboard.entries import migrate_file
        from leaderboard.verify import verify_bundle

        date = _date(args, parser) or dt.datetime.now(dt.timezone.utc).date()
        reports = []
        for bundle in args.bundles:
            report = verify_bundle(bundle)
            print(f"verify {bundle}: {report.summary()}")
            reports.append(report)
        return _render(
            lambda: migrate_file(args.entries, reports, date),
            args.site,
            f"migrate: {args.entries} left unchanged",
            f"migrate: {{count}} entries of {args.entries} now at format 2; rendered {{page}} and {{table}}",
        )
    if args.command == "render":
        from leaderboard.entries import load_entries

        return _render(
            lambda: load_entries(args.entries), args.site, "render", "render: {count} entries -> {page}, {table}"
        )
    from leaderboard.bundle import BundleError, bundle_from_run_dirs
    from leaderboard.safejson import UnsafeInputError
    from leaderboard.verify import verify_bundle

    try:
        out = bundle_from_run_dirs(
            args.run_dirs,
            args.out,
            track=args.track,
            name=args.name,
            submitter=args.submitter,
            model_revision_text=args.model_revision,
            hardware=args.hardware,
            include_checkpoints=not args.no_checkpoint,
            evaluation=args.evaluation,
            notes=args.notes,
        )
    except (BundleError, UnsafeInputError, KeyError, TypeError) as error:
        print(f"bundle: {error}")
        return 1
    report = verify_bundle(out)
    print(f"bundle: wrote {out}\nverify {out}: {report.summary()}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
