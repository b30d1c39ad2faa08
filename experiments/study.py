"""The answer of a study: for each regularised configuration, its paired difference from the plain
configuration trained the same way, an interval that follows the study's design, corrected for the
study's many comparisons, and one of four verdicts.

Runs that differ only in ``trainer.seed`` or ``data.fold`` are repeats of one configuration; a
regularised run and a plain one with the same seed and fold are a pair (a repeat without its
partner is dropped, and counted). The interval of the mean difference is mean +- t * se, with

- seeds on one split: the paired t interval, se = sd / sqrt(n);
- k-fold (``data.folds`` = K): Nadeau and Bengio's corrected resampled t, se = sd * sqrt(1/n + 1/(K-1)):
  the folds share most of their training data, so their results are correlated and sd / sqrt(n)
  is too small; for seeds x folds (repeated k-fold) the same with n = seeds x K (Bouckaert and Frank).

The family is the study's comparisons with plain: Holm's step-down correction decides helps or
hurts, and each interval is drawn at the level Holm's step judged it at (0.05 / (m - i + 1) for the
i-th smallest p-value, and the level of the first one not rejected for the rest), so an interval
excludes 0 exactly where the verdict is helps or hurts. Inside +-margin it is equivalent (a check at
least as strict as the two one-sided tests), otherwise inconclusive. A spread below what the metric
can resolve (one test example of an accuracy) is taken as that resolution: ties are not certainty.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
from scipy import stats

from plugins.metric_names import higher_is_better

REPEAT_KEYS = ("trainer.seed", "data.fold")  # params that make a run a repeat, not another configuration
CONFIDENCE = 0.95
MOST_REPEATS = 1000  # beyond this an estimate of the repeats a difference needs is given as "> 1000"


class Verdict(StrEnum):
    """A configuration's verdict; its value is the word every table, plot and page shows."""

    HELPS = "helps"
    HURTS = "hurts"
    EQUIVALENT = "equivalent"
    INCONCLUSIVE = "inconclusive"
    NO_VERDICT = "no verdict"  # fewer than two pairs
    NO_PLAIN = "no plain run with the same training"
    PLAIN = "plain (reference)"


JUDGED = (Verdict.HELPS, Verdict.HURTS)


@dataclass(frozen=True)
class Design:
    """How a study's repeats were made: seeds on one split, or the K folds of the training data
    (``folds``), over ``rounds`` seeds each (repeated k-fold)."""

    folds: int | None = None
    rounds: int = 1

    @property
    def correction(self) -> float:
        """Nadeau and Bengio's n2/n1: a fold's held-out share over its training share; 0 for seeds."""
        return 1 / (self.folds - 1) if self.folds else 0.0

    @property
    def name(self) -> str:
        if not self.folds:
            return "paired t"
        if self.rounds > 1:
            return f"Bouckaert-Frank corrected t ({self.rounds} seeds x {self.folds} folds)"
        return f"Nadeau-Bengio corrected t ({self.folds} folds)"

    @property
    def repeat_word(self) -> str:
        return "folds" if self.folds else "seeds"


def design_of(table: pd.DataFrame) -> Design:
    """The design of the runs of ``table`` (its ``folds`` and ``repeat`` columns)."""
    folds = pd.to_numeric(table.get("folds", pd.Series(dtype=float)), errors="coerce").dropna()
    if folds.empty:
        return Design()
    seeds = {json.loads(repeat)[0] for repeat in table["repeat"]}
    return Design(int(folds.max()), max(len(seeds), 1))


@dataclass(frozen=True)
class Differences:
    """One configuration's paired differences from plain in one metric, summarised."""

    n: int
    mean: float
    spread: float  # the sample standard deviation, at least what the metric resolves; NaN below two
    wins: int
    ties: int
    losses: int


def summarise(differences: np.ndarray, higher_better: bool, resolution: float = 0.0) -> Differences:
    """``differences`` (regularised - plain, one per pair) as counts, mean and spread."""
    n = len(differences)
    mean = float(np.mean(differences)) if n else math.nan
    # Each value is rounded to the resolution, so a difference carries at least its rounding spread.
    spread = max(float(np.std(differences, ddof=1)), resolution / math.sqrt(6)) if n > 1 else math.nan
    better = differences > 0 if higher_better else differences < 0
    tied = np.isclose(differences, 0.0, rtol=0.0, atol=1e-12)
    wins, ties = int(np.sum(better & ~tied)), int(np.sum(tied))
    return Differences(n, mean, spread, wins, ties, n - wins - ties)


def standard_errors(summaries: list[Differences], design: Design) -> np.ndarray:
    """The standard error of each mean difference under the design; NaN below two pairs."""
    n = np.array([s.n for s in summaries], dtype=float)
    spread = np.array([s.spread for s in summaries], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 1, spread * np.sqrt(1 / n + design.correction), math.nan)


def p_values(means: np.ndarray, errors: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Two-sided p-values of the mean differences (t with n - 1 degrees of freedom); a zero standard
    error gives 1 for a zero mean and 0 otherwise; NaN below two pairs."""
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = np.where(errors > 0, np.abs(means) / errors, np.where(means == 0, 0.0, np.inf))
        found = 2 * stats.t.sf(statistic, n - 1)
    return np.where(n > 1, found, math.nan)


def half_widths(errors: np.ndarray, n: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Half the width of each interval at its error rate (0.05: a 95% interval)."""
    with np.errstate(invalid="ignore"):
        return np.where(n > 1, stats.t.ppf(1 - levels / 2, n - 1) * errors, math.nan)


def holm_levels(p_values: list[float], alpha: float = 1 - CONFIDENCE) -> list[float]:
    """The error rate each comparison is judged at by Holm's step-down procedure: alpha / (m - i + 1)
    for the i-th smallest p-value while all before it were rejected, and from the first one that is
    not, that one's level for it and every larger p-value. NaN p-values (no verdict) are not in the
    family and get alpha."""
    ranked = sorted((p, position) for position, p in enumerate(p_values) if math.isfinite(p))
    m = len(ranked)
    levels = [alpha] * len(p_values)
    stopped_at = None
    for rank, (p, position) in enumerate(ranked):
        level = alpha / (m - rank) if stopped_at is None else stopped_at
        if stopped_at is None and p > level:
            stopped_at = level
        levels[position] = level
    return levels


def holm_adjusted(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values: max over j <= i of min(1, (m - j + 1) p_(j)); NaN stays NaN."""
    ranked = sorted((p, position) for position, p in enumerate(p_values) if math.isfinite(p))
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, (p, position) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - rank) * p))
        adjusted[position] = running
    return adjusted


def verdict(low: float, high: float, n: int, higher_better: bool, margin: float) -> Verdict:
    if n < 2:
        return Verdict.NO_VERDICT
    if low > 0 or high < 0:
        return Verdict.HELPS if (low > 0) == higher_better else Verdict.HURTS
    if -margin <= low and high <= margin:
        return Verdict.EQUIVALENT
    return Verdict.INCONCLUSIVE


def repeats_needed(spread: float, design: Design, margin: float, level: float) -> int | None:
    """The fewest repeats (pairs for seeds, rounds of K folds for k-fold) whose interval at ``level``
    would be narrower than ``margin`` on each side: enough to tell a difference the size of the
    margin from none. None where no number would (k-fold's correction keeps a floor above it)."""
    if not (math.isfinite(spread) and margin > 0):
        return None
    per_round = design.folds or 1
    n = np.arange(1, MOST_REPEATS + 1) * per_round
    n = n[n >= 2]
    half = t_quantiles(level, int(n[-1]))[n - 1] * spread * np.sqrt(1 / n + design.correction)
    narrow = np.flatnonzero(half < margin)
    if len(narrow):
        return int(n[narrow[0]] // per_round)
    floor = stats.norm.ppf(1 - level / 2) * spread * math.sqrt(design.correction)
    return None if floor >= margin else MOST_REPEATS + 1


@functools.lru_cache(maxsize=64)
def t_quantiles(level: float, most_df: int) -> np.ndarray:
    """t(1 - level/2, df) for df = 0 .. most_df (index = df; df 0 is NaN): one scipy call per level,
    not one per question."""
    df = np.arange(0, most_df + 1, dtype=float)
    with np.errstate(invalid="ignore"):
        return stats.t.ppf(1 - level / 2, df)


@dataclass(frozen=True)
class Study:
    """What a verdict table is judged with: the design, the equivalence margin and each metric's
    resolution (one test example of an accuracy; 0: continuous)."""

    design: Design
    margin: float
    resolution: dict[str, float]


def verdict_table(table: pd.DataFrame, metric: str, compared: list[str], study: Study) -> pd.DataFrame:
    """One row per configuration (the per-run table's ``configuration``, ``setup``, ``repeat`` and
    ``plain`` columns say which), plain ones first: its runs, the mean of each of ``compared``, and
    for a regularised one its paired difference from plain in each (``d_<metric>`` with
    ``_low``/``_high`` at its Holm level and ``_low_unadjusted``/``_high_unadjusted`` at 95%),
    the pairs and the repeats dropped, W/T/L and the verdict on ``metric``."""
    rows, differences = [], {column: [] for column in compared}
    for configuration, runs in table.groupby("configuration", sort=False):
        plain = bool(runs["plain"].iloc[0])
        row = {"configuration": configuration, "plain": plain, "runs": len(runs)}
        row.update({f"mean_{column}": runs[column].mean() for column in compared})
        if plain:
            row["n"] = len(runs)
        else:
            partner = table[table["plain"] & table["setup"].eq(runs["setup"].iloc[0])]
            row["partnered"] = not partner.empty
            found, row["n"], row["dropped"] = paired_differences(runs, partner, compared)
            for column in compared:
                differences[column].append(found[column])
        rows.append(row)
    verdicts = pd.DataFrame(rows)
    regularised = ~verdicts["plain"]
    judged: dict[str, list] = {}
    for column in compared:
        judged.update(judge_column(differences[column], study, higher_is_better(column), column, column == metric))
    verdicts = verdicts.join(pd.DataFrame(judged, index=verdicts.index[regularised]))
    verdicts["verdict"] = verdicts["verdict"].astype(object)  # float where no configuration is regularised
    verdicts.loc[verdicts["plain"], "verdict"] = Verdict.PLAIN
    if "partnered" in verdicts:
        verdicts.loc[verdicts["partnered"].eq(False), "verdict"] = Verdict.NO_PLAIN
        verdicts = verdicts.drop(columns="partnered")
    verdicts = pd.concat([verdicts[verdicts["plain"]], verdicts[~verdicts["plain"]]], ignore_index=True)
    verdicts.attrs.update(interval=study.design.name, margin=study.margin)
    return verdicts


def paired_differences(runs: pd.DataFrame, plain: pd.DataFrame, compared: list[str]) -> tuple[dict, int, int]:
    """By column, the differences of ``runs`` from ``plain`` matched by repeat (a repeat run twice
    counts by its mean); the pairs, and the repeats of either side left without a partner."""
    mine, theirs = runs.groupby("repeat")[compared].mean(), plain.groupby("repeat")[compared].mean()
    pairs = mine.join(theirs, how="inner", rsuffix="_plain")
    found = {column: (pairs[column] - pairs[f"{column}_plain"]).dropna().to_numpy() for column in compared}
    dropped = len(mine.index.symmetric_difference(theirs.index)) if not plain.empty else 0
    return found, len(pairs), dropped


def judge_column(per_configuration: list[np.ndarray], study: Study, higher: bool, column: str, verdicts: bool) -> dict:
    """The columns of one compared metric over the regularised configurations (and, for the judged
    one, the verdict columns)."""
    summaries = [summarise(d, higher, study.resolution.get(column, 0.0)) for d in per_configuration]
    n = np.array([s.n for s in summaries], dtype=float)
    means = np.array([s.mean for s in summaries], dtype=float)
    errors = standard_errors(summaries, study.design)
    p = p_values(means, errors, n)
    levels = np.array(holm_levels(list(p)), dtype=float)
    halves = half_widths(errors, n, levels)
    unadjusted = half_widths(errors, n, np.full(len(n), 1 - CONFIDENCE))
    found = {
        f"d_{column}": list(means),
        f"d_{column}_low": list(means - halves),
        f"d_{column}_high": list(means + halves),
        f"d_{column}_low_unadjusted": list(means - unadjusted),
        f"d_{column}_high_unadjusted": list(means + unadjusted),
    }
    if not verdicts:
        return found
    judged = [verdict(m - h, m + h, s.n, higher, study.margin) for s, m, h in zip(summaries, means, halves)]
    found.update(
        p=list(p),
        p_holm=holm_adjusted(list(p)),
        level=list(levels),
        wins=[s.wins for s in summaries],
        ties=[s.ties for s in summaries],
        losses=[s.losses for s in summaries],
        verdict=judged,
        repeats_needed=[
            repeats_needed(s.spread, study.design, study.margin, level) if v == Verdict.INCONCLUSIVE else None
            for s, level, v in zip(summaries, levels, judged)
        ],
    )
    return found
