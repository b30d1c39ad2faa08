"""Compare runs: did regularisation help, and by how much?

    python -m experiments.compare [--experiment NAME] [--parent RUN_ID|latest|all] [--group-by TAG]
                                  [--sort-by METRIC] [--output DIR] [--max-curves N]

One row per run (from one search, no metric histories), with a column per command-line override
that differs between the runs, printed as an aligned table with the plain run marked and every
run's difference from the plain run trained the same way; written as
comparison.csv and comparison.md with four plots. When the runs belong to a sweep, it all goes onto
the sweep's parent run under comparison/.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import OmegaConf

from experiments import CONF, study_report
from experiments.cli import (
    CONFIGURED,
    TRACKING_URI_HELP,
    TrackingStoreError,
    expand_quoted_option,
    open_tracking_store,
)
from experiments.promote import ALIAS, NotPromoted, promote
from experiments.report import Answer, write_report
from experiments.runs_table import CompareError, comparison_table, find_runs, find_study, printable
from plugins.redaction import one_line
from plugins.sweep import end_orphaned_sweeps

DEFAULT_EXPERIMENT = CONFIGURED.experiment_name
STUDY = OmegaConf.load(CONF / "study.yaml")  # how a study is judged: the equivalence margin


def main(argv: list[str] | None = None) -> int:
    args = parse_args(expand_quoted_option(sys.argv[1:] if argv is None else argv, "--options"))
    try:
        client = open_tracking_store(args.tracking_uri)
        experiment, parent = find_study(client, args.experiment, args.parent, DEFAULT_EXPERIMENT)
        end_orphaned_sweeps(client, experiment.experiment_id)  # a sweep whose driver died is not running
        runs = find_runs(client, experiment.experiment_id, parent)
        table = comparison_table(runs, args.group_by, args.sort_by)
        answer = Answer.of(table, args.sort_by, args.margin, STUDY.margin)
        requirements = [study_report.parse_requirement(text, answer.verdicts) for text in args.require]
    except (CompareError, TrackingStoreError, study_report.RequirementError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(table)} runs of {study_scope(experiment, parent)}: {len(answer.verdicts)} configurations")
    print(answer.printable())
    print(f"\nper run, sorted by {args.sort_by}; * marks the plain run, d_ columns the difference from it:")
    print(printable(table, args.group_by))
    try:
        files = write_report(client, table, answer, runs, Path(args.output), args.group_by, args.max_curves)
    except OSError as error:  # a folder that cannot be made or written to, a full disk
        print(
            f"error: --output {args.output}: cannot write the report there ({error.strerror}: {error.filename})",
            file=sys.stderr,
        )
        return 2
    print(f"wrote {', '.join(str(file) for file in files)}")
    if parent is not None:
        client.log_artifacts(parent.info.run_id, str(files[0].parent), "comparison")
        answer.describe(client, parent.info.run_id, table, runs)
        print(f"logged them to sweep {parent.info.run_id} as comparison/, with the answer as its description")
    return gate(args, requirements, client, answer, table, parent)


def gate(args, requirements: list, client, answer: Answer, table, parent) -> int:
    """The CI gate: exit 1 where a requirement fails; with --promote, the champion moves only where
    every requirement holds and a configuration helps."""
    failed = [why for requirement in requirements if (why := study_report.judge(requirement, answer.verdicts))]
    for why in failed:
        print(f"requirement not met: {why}", file=sys.stderr)
    if args.promote is None:
        return 1 if failed else 0
    try:
        if failed:
            raise NotPromoted(f"{len(failed)} requirement{'s' if len(failed) > 1 else ''} not met")
        print(promote(client, answer, table, parent, args.promote))
    except NotPromoted as why:
        print(f"not promoted to {args.promote}@{ALIAS}: {why}; nothing moved", file=sys.stderr)
        return 1
    return 0


def study_scope(experiment, parent) -> str:
    """Which runs these are: ``sweep ID (NAME) in experiment E, started 2026-12-06 10:25 UTC``."""
    if parent is None:
        return one_line(f"experiment {experiment.name}")  # names read back from the store
    started = datetime.fromtimestamp(parent.info.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return one_line(
        f"sweep {parent.info.run_id} ({parent.info.run_name}) in experiment {experiment.name}, started {started}"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiment",
        default=None,
        help="experiment name (default: the one of your newest sweep, else conf's mlflow.experiment_name)",
    )
    parser.add_argument(
        "--parent",
        default="latest",
        help="a sweep's parent run id; 'latest' (your newest sweep, in --experiment where given, else in any "
        "experiment; without one, all runs) or 'all'",
    )
    parser.add_argument("--group-by", default="reg", help="run tag that tells the variants apart")
    parser.add_argument("--sort-by", default="test_accuracy", help="column to sort by (best first)")
    parser.add_argument("--output", default="comparison", help="folder for the CSV, Markdown and plots")
    parser.add_argument(
        "--max-curves",
        type=positive_whole_number,
        default=20,
        help="configurations drawn in the figures (the first by effect, plain first; every run of each counted)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=TRACKING_URI_HELP,
    )
    add_gate_options(parser)
    return parser.parse_args(argv)


def add_gate_options(parser: argparse.ArgumentParser) -> None:
    """How the study is judged, what it must show, and what moves when it does."""
    parser.add_argument(
        "--margin",
        type=non_negative_number,
        default=None,
        help="the equivalence margin, in pp for an accuracy (default: conf/study.yaml's margin) and in "
        "the loss's units for a loss (default: none, no loss is called equivalent)",
    )
    parser.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="'CONFIG: d_METRIC >= X'",
        help="exit 1 unless the interval of CONFIG's difference from plain (Holm-adjusted, as the verdict) is "
        ">= X (lower bound) or <= X (upper bound); may be given several times",
    )
    parser.add_argument(
        "--promote",
        metavar="NAME",
        help=f"when every --require holds, register the top run of the best configuration that helps as a new "
        f"version of NAME with the alias {ALIAS}; else nothing moves and the exit code is 1",
    )


def non_negative_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number >= 0")
    return value


def positive_whole_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return int(text)


if __name__ == "__main__":
    raise SystemExit(main())
