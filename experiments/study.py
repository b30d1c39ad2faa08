"""The answer of a study: for each regularised configuration, its paired difference from the plain
configuration trained the same way, with a 95% t interval, the wins and a verdict.

Runs that differ only in ``trainer.seed`` or ``data.fold`` are repeats of one configuration; a
regularised run and a plain one with the same seed (and fold) are a pair. The interval is the
paired t interval of the mean difference, mean +- t(0.975, n-1) * sd / sqrt(n): the verdict is
``helps`` or ``hurts`` where it excludes 0, ``no clear difference`` where it does not, and no
verdict from fewer than two pairs.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from plugins.metric_names import higher_is_better

REPEAT_KEYS = ("trainer.seed", "data.fold")  # params that make a run a repeat, not another configuration
CONFIDENCE = 0.95
MOST_REPEATS = 1000  # beyond this an estimate of the repeats a difference needs is given as "> 1000"
HELPS, HURTS, UNCLEAR = "helps", "hurts", "no clear difference"
PLAIN = "plain (reference)"


def t_interval(differences: np.ndarray) -> tuple[float, float]:
    """The 95% t interval of the mean of ``differences``; NaNs for fewer than two."""
    n = len(differences)
    if n < 2:
        return math.nan, math.nan
    mean, spread = float(np.mean(differences)), float(np.std(differences, ddof=1))
    half = stats.t.ppf((1 + CONFIDENCE) / 2, n - 1) * spread / math.sqrt(n)
    return mean - half, mean + half


def repeats_needed(mean: float, spread: float) -> int | None:
    """The fewest pairs whose 95% t interval would exclude 0 for a mean difference ``mean`` with
    standard deviation ``spread`` (the observed ones); None where no number would (mean 0)."""
    if mean == 0 or not math.isfinite(mean) or not math.isfinite(spread):
        return None
    for n in range(2, MOST_REPEATS + 1):
        if stats.t.ppf((1 + CONFIDENCE) / 2, n - 1) * spread / math.sqrt(n) < abs(mean):
            return n
    return MOST_REPEATS + 1


def verdict(low: float, high: float, n: int, higher_better: bool) -> str:
    if n < 2:
        return f"{n} repeat{'s' if n != 1 else ''}: no verdict"
    if low > 0 or high < 0:
        return HELPS if (low > 0) == higher_better else HURTS
    return UNCLEAR


def verdict_table(table: pd.DataFrame, metric: str, compared: list[str]) -> pd.DataFrame:
    """One row per configuration (the per-run table's ``configuration``, ``setup``, ``repeat`` and
    ``plain`` columns say which), plain ones first: its runs, the mean of each of ``compared``, and
    for a regularised one its paired difference from plain in each (``d_<metric>`` with
    ``_low``/``_high``), the wins and the verdict on ``metric``."""
    rows = []
    for configuration, runs in table.groupby("configuration", sort=False):
        plain = bool(runs["plain"].iloc[0])
        row = {"configuration": configuration, "plain": plain, "runs": len(runs)}
        row.update({f"mean_{column}": runs[column].mean() for column in compared})
        if plain:
            row.update(n=len(runs), verdict=PLAIN)
        else:
            partner = table[table["plain"] & table["setup"].eq(runs["setup"].iloc[0])]
            row.update(paired_effects(runs, partner, metric, compared))
        rows.append(row)
    verdicts = pd.DataFrame(rows)
    return pd.concat([verdicts[verdicts["plain"]], verdicts[~verdicts["plain"]]], ignore_index=True)


def paired_effects(runs: pd.DataFrame, plain: pd.DataFrame, metric: str, compared: list[str]) -> dict:
    """The paired differences of ``runs`` from ``plain`` (matched by repeat; a repeat run twice
    counts by its mean), summarised."""
    pairs = (
        runs.groupby("repeat")[compared]
        .mean()
        .join(plain.groupby("repeat")[compared].mean(), how="inner", rsuffix="_plain")
    )
    result: dict = {"n": len(pairs)}
    for column in compared:
        differences = (pairs[column] - pairs[f"{column}_plain"]).dropna().to_numpy()
        low, high = t_interval(differences)
        mean = float(np.mean(differences)) if len(differences) else math.nan
        result.update({f"d_{column}": mean, f"d_{column}_low": low, f"d_{column}_high": high})
        if column == metric:
            higher_better = higher_is_better(metric)
            result["wins"] = int(np.sum(differences > 0 if higher_better else differences < 0))
            result["verdict"] = (
                "no plain run with the same training"
                if plain.empty
                else verdict(low, high, len(differences), higher_better)
            )
            spread = float(np.std(differences, ddof=1)) if len(differences) > 1 else math.nan
            unresolved = result["verdict"] == UNCLEAR
            result["repeats_needed"] = repeats_needed(mean, spread) if unresolved else None
    return result
