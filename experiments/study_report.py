"""How a study's answer reads: the one-sentence summary, the verdict table (printed and Markdown),
the parent run's summary, and the requirements a CI gate checks (its figures: experiments/figures.py)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from experiments import study
from plugins.metric_names import higher_is_better

WIDTH = 120  # printed tables fit a terminal this wide


# ----------------------------------------------------------------------------- numbers as text


def in_points(metric: str) -> bool:
    """Accuracies (fractions) read as percentage points; other metrics as they are."""
    return "accuracy" in metric


def signed(value: float, metric: str) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value * 100:+.1f}" if in_points(metric) else f"{value:+.3g}"


def effect_text(row: pd.Series, metric: str, judged: bool = True) -> str:
    """``+0.9 [+0.3, +1.5]``: the mean difference and its interval (pp for an accuracy); for the
    ``judged`` metric, whose ties are counted, ``all tied`` after it where every pair tied."""
    mean, low, high = (row.get(f"d_{metric}{end}", math.nan) for end in ("", "_low", "_high"))
    if not isinstance(mean, float) or not math.isfinite(mean):
        return "-"
    if not math.isfinite(low):
        return signed(mean, metric)
    tied = " all tied" if judged and row.get("ties") == row.get("n") and row.get("n", 0) > 1 else ""
    return f"{signed(mean, metric)} [{signed(low, metric)}, {signed(high, metric)}]{tied}"


def verdict_words(row: pd.Series) -> str:
    """The verdict as the table says it: ``1 repeat: no verdict`` where there are too few pairs."""
    found = study.Verdict(row["verdict"])
    if found == study.Verdict.NO_VERDICT:
        n = int(row["n"])
        return f"{n} repeat{'s' if n != 1 else ''}: {found}"
    return str(found)


def record_text(row: pd.Series) -> str:
    """Wins, ties and losses against plain: ``2/1/0``."""
    return f"{int(row['wins'])}/{int(row['ties'])}/{int(row['losses'])}"


def resolving_text(row: pd.Series) -> str:
    """How many repeats would tell a difference the size of the margin from none: ``~12``; ``-``
    where the verdict is decided."""
    needed = row.get("repeats_needed")
    if row["verdict"] != study.Verdict.INCONCLUSIVE:
        return "-"
    if not isinstance(needed, (int, float)) or not math.isfinite(needed):
        return "no number"
    return f"> {study.MOST_REPEATS}" if needed > study.MOST_REPEATS else f"~{int(needed)}"


# ----------------------------------------------------------------------------- the answer


def headline(verdicts: pd.DataFrame, metric: str, repeats: str, margin: str) -> str:
    """One sentence: the configurations that help or hurt, each with its effect, then the equivalent
    ones, the inconclusive ones and those without a verdict, e.g. ``l2 helps: +0.9 pp test_accuracy
    [+0.3, +1.5], W/T/L 3/0/0 seeds; equivalent (within ±0.5 pp): dropout``."""
    unit = " pp" if in_points(metric) else ""
    regularised = verdicts[~verdicts["plain"]]
    parts = []
    for _, row in regularised[regularised["verdict"].isin(study.JUDGED)].iterrows():
        mean, low, high = (signed(row[f"d_{metric}{end}"], metric) for end in ("", "_low", "_high"))
        parts.append(
            f"{row['configuration']} {row['verdict']}: {mean}{unit} {metric} [{low}, {high}], "
            f"W/T/L {record_text(row)} {repeats}"
        )
    others = regularised[~regularised["verdict"].isin(study.JUDGED)]
    by_words: dict[str, list[str]] = {}
    for _, row in others.iterrows():
        by_words.setdefault(verdict_words(row), []).append(row["configuration"])
    for found, configurations in by_words.items():
        if found == study.Verdict.EQUIVALENT:
            found = f"{found} (within ±{margin})"
        elif "no verdict" in found:
            found = found.replace(": no verdict", "").join(("no verdict (", ")"))
        parts.append(f"{found}: {', '.join(configurations)}")
    if len(regularised) and not regularised["verdict"].eq(study.Verdict.HELPS).any():
        parts.append(f"none helps (top mean: {top_mean_configuration(verdicts, metric)})")
    return "; ".join(parts) or "no regularised configuration to judge"


def verdict_rows(verdicts: pd.DataFrame, metric: str, compared: list[str], repeats: str) -> pd.DataFrame:
    """The verdict table as a person reads it: a row per configuration, strings."""
    unit = " pp" if in_points(metric) else ""
    regularised = ~verdicts["plain"]
    shown = pd.DataFrame({"configuration": verdicts["configuration"]})
    dropped = verdicts.get("dropped", pd.Series(0, index=verdicts.index)).fillna(0)
    shown["n"] = [f"{int(n)} ({int(d)} unpaired)" if d else str(int(n)) for n, d in zip(verdicts["n"], dropped)]
    shown[f"mean {metric}"] = verdicts[f"mean_{metric}"].map(lambda value: f"{value:.4g}")
    for column in compared:
        if f"d_{column}" in verdicts:
            label = f"Δ {column}{unit if column == metric else ''} [CI]"
            shown[label] = [
                "-" if row["plain"] else effect_text(row, column, judged=column == metric)
                for _, row in verdicts.iterrows()
            ]
    shown[f"W/T/L ({repeats})"] = ["-" if row["plain"] else record_text(row) for _, row in verdicts.iterrows()]
    shown["verdict"] = [verdict_words(row) if regularised[i] else str(row["verdict"]) for i, row in verdicts.iterrows()]
    shown["repeats to resolve"] = [resolving_text(row) for _, row in verdicts.iterrows()]
    return shown


def fitted(frame: pd.DataFrame, droppable: list[str], width: int = WIDTH) -> tuple[str, list[str]]:
    """``frame`` as aligned text at most ``width`` wide: columns of ``droppable`` are left out, in
    that order, until it fits; returns the text and what was left out."""
    left_out: list[str] = []
    text = frame.to_string(index=False)
    for column in droppable:
        if max(map(len, text.splitlines())) <= width:
            break
        if column in frame:
            frame = frame.drop(columns=column)
            left_out.append(column)
            text = frame.to_string(index=False)
    return text, left_out


def shortened(text: str, most: int) -> str:
    """``text`` in at most ``most`` characters, cut in the middle: names differ at both ends
    (``l2+dropout+bat…callbacks=basic``, ``cnn-l2 callbac…trainer.seed=3``)."""
    if len(text) <= most:
        return text
    head = (most - 1) // 2
    return text[:head] + "…" + text[len(text) - (most - 1 - head) :]


def markdown(
    verdicts: pd.DataFrame, metric: str, compared: list[str], repeats: str, margin: str, notes: list[str]
) -> str:
    """The sentence on top, the verdict table, then what the intervals are: the parent's description."""
    rows = verdict_rows(verdicts, metric, compared, repeats)
    below = "\n".join(f"_{note}_  " for note in notes)
    return f"**{headline(verdicts, metric, repeats, margin)}**\n\n{rows.to_markdown(index=False)}\n\n{below}\n"


# ----------------------------------------------------------------------------- on the parent run


def metric_key(text: str) -> str:
    """A configuration's label as part of a metric name, readable and of ``[A-Za-z0-9_.-]`` only: a
    part per word, a ``_`` for each run of other characters (``l1+l2 callbacks=basic`` ->
    ``l1_l2.callbacks_basic``), within MLflow's 250 characters."""
    parts = [re.sub(r"[^A-Za-z0-9.-]+", "_", word).strip("_") for word in text.split()]
    return ".".join(part for part in parts if part)[:200] or "_"


def within(note: str, most: int) -> str:
    """``note`` (Markdown lines) in at most ``most`` characters: the lines that fit, and a last one
    saying where the rest is (a tag value has a limit; a study of many configurations passes it)."""
    if len(note) <= most:
        return note
    ending = "\n_... the whole table is comparison/verdicts.md_\n"
    kept = []
    for line in note.splitlines(keepends=True):
        if sum(map(len, kept)) + len(line) + len(ending) > most:
            break
        kept.append(line)
    return "".join(kept) + ending


def rounded(value: float, resolution: float | None) -> float:
    """``value`` to one decimal below ``resolution`` (its smallest step in the same unit; a float32
    0.9703703820705414 with 1/270 -> 0.9704), else to 4 significant digits."""
    if not math.isfinite(value) or value == 0:
        return value
    step = resolution if resolution else 10 ** (math.floor(math.log10(abs(value))) - 3)
    return round(value, max(math.ceil(-math.log10(step)), 0) + (1 if resolution else 0))


def parent_metrics(verdicts: pd.DataFrame, metric: str, resolution: float | None) -> dict[str, float]:
    """What a chart of sweep parents can show: the plain configurations' mean, the best
    configuration's, and each regularised configuration's mean difference from plain, in the units
    the page shows (percentage points for an accuracy's difference: ``d_test_accuracy_pp.l2``),
    rounded to the test split's ``resolution`` (in the metric's units; None: 4 digits)."""
    found = {}
    plain = verdicts[verdicts["plain"]]
    if len(plain):
        found[f"plain_{metric}"] = float(np.average(plain[f"mean_{metric}"], weights=plain["runs"]))
    best = verdicts[f"mean_{metric}"].max() if higher_is_better(metric) else verdicts[f"mean_{metric}"].min()
    if math.isfinite(best):
        found[f"best_{metric}"] = float(best)
    found = {key: rounded(value, resolution) for key, value in found.items()}
    scale, unit = (100, "_pp") if in_points(metric) else (1, "")
    for _, row in verdicts[~verdicts["plain"]].iterrows():
        if math.isfinite(row[f"d_{metric}"]):
            value = rounded(float(row[f"d_{metric}"]) * scale, resolution and resolution * scale)
            found[f"d_{metric}{unit}.{metric_key(row['configuration'])}"] = value
    return found


def best_configuration(verdicts: pd.DataFrame, metric: str) -> str | None:
    """The helping configuration with the best mean; None where none helps."""
    helping = verdicts[verdicts["verdict"].eq(study.Verdict.HELPS)]
    return top_mean_configuration(helping, metric)


def top_mean_configuration(verdicts: pd.DataFrame, metric: str) -> str | None:
    """The configuration with the best mean, whether or not it differs from the others."""
    means = verdicts.set_index("configuration")[f"mean_{metric}"].dropna()
    if means.empty:
        return None
    return str(means.idxmax() if higher_is_better(metric) else means.idxmin())


# ----------------------------------------------------------------------------- the CI gate


REQUIREMENT = re.compile(r"^\s*(?P<configuration>.+?)\s*:\s*(?P<column>[\w.]+)\s*(?P<op>>=|<=)\s*(?P<value>\S+)\s*$")


@dataclass(frozen=True)
class Requirement:
    text: str
    configuration: str
    column: str
    op: str
    value: float


class RequirementError(ValueError):
    """A requirement that cannot be judged: unreadable, or naming what the study lacks."""


def parse_requirement(text: str, verdicts: pd.DataFrame) -> Requirement:
    """``"l2: d_test_accuracy >= 0"``; the configuration may be named by its label or, where only one
    configuration has it, by its group (``l2``)."""
    match = REQUIREMENT.match(text)
    value = _number(match["value"]) if match else None
    if match is None or value is None:
        raise RequirementError(f"--require {text!r}: expected 'CONFIGURATION: d_METRIC >= NUMBER' (or <=)")
    configuration = _configuration(match["configuration"], verdicts, text)
    columns = sorted(column[:-4] for column in verdicts if column.startswith("d_") and column.endswith("_low"))
    if match["column"] not in columns:
        raise RequirementError(f"--require {text!r}: no column {match['column']}; expected one of {', '.join(columns)}")
    return Requirement(text, configuration, match["column"], match["op"], value)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _configuration(name: str, verdicts: pd.DataFrame, text: str) -> str:
    regularised = verdicts[~verdicts["plain"]]["configuration"]
    if name in set(regularised):
        return name
    by_group = [label for label in regularised if label.split(" ")[0] == name]
    if len(by_group) == 1:
        return by_group[0]
    known = ", ".join(regularised) or "none"
    many = f" is {len(by_group)} configurations, name one" if by_group else ": no such regularised configuration"
    raise RequirementError(f"--require {text!r}: {name!r}{many}; the study's: {known}")


def judge(requirement: Requirement, verdicts: pd.DataFrame) -> str | None:
    """None where the requirement holds on the interval (its lower bound for >=, its upper for <=);
    else why not."""
    row = verdicts.set_index("configuration").loc[requirement.configuration]
    bound = row[f"{requirement.column}_low" if requirement.op == ">=" else f"{requirement.column}_high"]
    if not math.isfinite(bound):
        return f"{requirement.text}: {int(row['n'])} pair(s), no interval to judge by"
    holds = bound >= requirement.value if requirement.op == ">=" else bound <= requirement.value
    side = "lower" if requirement.op == ">=" else "upper"
    return None if holds else f"{requirement.text}: the interval's {side} bound is {bound:.4g}"
