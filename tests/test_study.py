"""The study's statistics on made-up differences, checked against computations done here by hand and
by simulation: the intervals of each design, Holm's correction, the four verdicts, ties, the repeats
a margin needs, and the requirements of the CI gate."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments import study, study_report
from experiments.study import Design, Study, Verdict

SEEDS, FIVE_FOLDS, TWO_BY_FIVE = Design(), Design(folds=5), Design(folds=5, rounds=2)


def judged(per_configuration, design=SEEDS, margin=0.005, resolution=0.0):
    """The project's own verdict code on one metric (an accuracy: higher is better)."""
    found = study.judge_column(
        [np.asarray(d, dtype=float) for d in per_configuration],
        Study(design, margin, {"test_accuracy": resolution}),
        True,
        "test_accuracy",
        True,
    )
    return pd.DataFrame(found).assign(n=[len(d) for d in per_configuration])


# ----------------------------------------------------------------------------- intervals


def test_k_fold_differences_get_nadeau_and_bengio_s_wider_interval():
    # The 5-fold study: l2 - plain = +1.0, +2.0, +0.2, +1.5, +0.8 pp.
    differences = np.array([1.0, 2.0, 0.2, 1.5, 0.8]) / 100
    mean, sd, t = differences.mean(), differences.std(ddof=1), stats.t.ppf(0.975, 4)
    plain_half = t * sd / math.sqrt(5)
    corrected_half = t * sd * math.sqrt(1 / 5 + 1 / 4)  # n2/n1 = one fold held out of four
    assert plain_half * 100 == pytest.approx(0.85, abs=0.005)
    assert corrected_half * 100 == pytest.approx(1.28, abs=0.005)
    row = judged([differences], FIVE_FOLDS, margin=0.0).iloc[0]
    assert (row["d_test_accuracy_low"], row["d_test_accuracy_high"]) == pytest.approx(
        (mean - corrected_half, mean + corrected_half)
    )
    assert row["d_test_accuracy_low"] < 0 and row["verdict"] == Verdict.INCONCLUSIVE  # the plain t said helps
    assert judged([differences], SEEDS, margin=0.0).iloc[0]["verdict"] == Verdict.HELPS


def test_repeated_k_fold_uses_bouckaert_and_frank_s_n_of_seeds_times_folds():
    differences = np.array([0.8, 1.1, 0.3, 1.6, 0.9, 1.2, 0.4, 1.0, 1.4, 0.7]) / 100  # 2 seeds x 5 folds
    half = stats.t.ppf(0.975, 9) * differences.std(ddof=1) * math.sqrt(1 / 10 + 1 / 4)
    row = judged([differences], TWO_BY_FIVE).iloc[0]
    assert row["d_test_accuracy_high"] - row["d_test_accuracy"] == pytest.approx(half)
    assert TWO_BY_FIVE.name == "Bouckaert-Frank corrected t (2 seeds x 5 folds)"
    assert FIVE_FOLDS.name == "Nadeau-Bengio corrected t (5 folds)" and SEEDS.name == "paired t"


def test_the_design_is_read_from_the_runs_folds_and_seeds():
    def table(repeats, folds):
        return pd.DataFrame({"repeat": repeats, "folds": folds})

    assert study.design_of(table(['["1", null]', '["2", null]'], [None, None])) == SEEDS
    assert study.design_of(table([f'["1", "{k}"]' for k in range(5)], [5.0] * 5)) == FIVE_FOLDS
    both = [f'["{seed}", "{k}"]' for seed in (1, 2) for k in range(5)]
    assert study.design_of(table(both, [5.0] * 10)) == TWO_BY_FIVE


# ----------------------------------------------------------------------------- many comparisons


def holm_by_its_definition(p_values, alpha=0.05):
    """Rejected or not, for each p-value: H_(i) falls where every p_(j), j <= i, is <= alpha / (m - j + 1)."""
    order = np.argsort(p_values)
    rejected, still = [False] * len(p_values), True
    for rank, position in enumerate(order):
        still = still and p_values[position] <= alpha / (len(p_values) - rank)
        rejected[position] = still
    return rejected


@pytest.mark.parametrize("p_values", [[0.01, 0.04, 0.03, 0.005], [0.001, 0.2, 0.013, 0.02, 0.011], [0.3, 0.6]])
def test_holm_levels_reject_exactly_what_holm_s_procedure_rejects(p_values):
    levels = study.holm_levels(p_values)
    assert [p <= level for p, level in zip(p_values, levels)] == holm_by_its_definition(p_values)
    adjusted = study.holm_adjusted(p_values)
    assert [value <= 0.05 for value in adjusted] == holm_by_its_definition(p_values)


def test_holm_s_adjusted_p_values_by_hand():
    # Sorted 0.005, 0.01, 0.03, 0.04 with m = 4: 4 x 0.005, 3 x 0.01, 2 x 0.03, then max(0.06, 1 x 0.04).
    assert study.holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert study.holm_levels([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.05 / 3, 0.025, 0.025, 0.0125])


def test_one_configuration_that_helps_alone_does_not_after_four_comparisons():
    # The crafted study: l1 at +1.0, +1.3, +0.7 pp (p about 0.03 alone) beside three without effect.
    l1 = np.array([1.0, 1.3, 0.7]) / 100
    alone = judged([l1]).iloc[0]
    assert alone["p"] == pytest.approx(0.0287, abs=5e-4) and alone["verdict"] == Verdict.HELPS
    others = [np.array([0.2, -0.4, 0.1]) / 100, np.array([-0.3, 0.5, 0.0]) / 100, np.array([0.4, -0.2, -0.1]) / 100]
    four = judged([l1, *others]).iloc[0]
    assert four["p_holm"] == pytest.approx(4 * alone["p"]) and four["verdict"] == Verdict.INCONCLUSIVE
    assert four["d_test_accuracy_low"] < 0 < four["d_test_accuracy_low_unadjusted"]


# ----------------------------------------------------------------------------- verdicts, ties, resolution


@pytest.mark.parametrize(
    ("low", "high", "n", "higher_better", "expected"),
    [
        (0.01, 0.03, 3, True, Verdict.HELPS),
        (-0.03, -0.01, 3, True, Verdict.HURTS),
        (-0.03, -0.01, 3, False, Verdict.HELPS),  # a loss that fell
        (-0.004, 0.003, 5, True, Verdict.EQUIVALENT),  # inside +-0.005
        (-0.006, 0.003, 5, True, Verdict.INCONCLUSIVE),
        (math.nan, math.nan, 1, True, Verdict.NO_VERDICT),
    ],
)
def test_four_verdicts_and_none_from_one_pair(low, high, n, higher_better, expected):
    assert study.verdict(low, high, n, higher_better, margin=0.005) == expected


def test_ties_are_counted_as_ties_and_never_read_as_certainty():
    one_image = 1 / 270
    row = judged([[0.0, 0.0, 0.0]], resolution=one_image, margin=0.005).iloc[0]
    assert (row["wins"], row["ties"], row["losses"]) == (0, 3, 0)
    half = stats.t.ppf(0.975, 2) * (one_image / math.sqrt(6)) / math.sqrt(3)  # the spread of one image's rounding
    assert row["d_test_accuracy_high"] == pytest.approx(half)  # not [+0.0, +0.0]
    assert study_report.effect_text(row, "test_accuracy") == "+0.0 [-0.4, +0.4] all tied"
    assert row["verdict"] == Verdict.EQUIVALENT  # within 0.5 pp; not within a margin below one image:
    assert judged([[0.0, 0.0, 0.0]], resolution=one_image, margin=0.003).iloc[0]["verdict"] == Verdict.INCONCLUSIVE
    mixed = judged([[one_image, -one_image, 0.0]], resolution=one_image).iloc[0]
    assert study_report.record_text(mixed) == "1/1/1"


def test_equivalent_where_many_pairs_stay_within_the_margin():
    rng = np.random.default_rng(3)
    close = rng.normal(0, 0.001, 12)  # twelve seeds within about 0.2 pp of plain
    assert judged([close], margin=0.005).iloc[0]["verdict"] == Verdict.EQUIVALENT


def test_repeats_needed_is_the_fewest_whose_interval_is_narrower_than_the_margin():
    needed = study.repeats_needed(spread=0.01, design=SEEDS, margin=0.005, level=0.05)
    half = [stats.t.ppf(0.975, n - 1) * 0.01 / math.sqrt(n) for n in (needed - 1, needed)]
    assert half[0] >= 0.005 > half[1]
    # k-fold: rounds of five folds; the correction alone keeps the interval wider than a small margin.
    rounds = study.repeats_needed(spread=0.002, design=FIVE_FOLDS, margin=0.005, level=0.05)
    n = 5 * rounds
    assert stats.t.ppf(0.975, n - 1) * 0.002 * math.sqrt(1 / n + 1 / 4) < 0.005
    assert study.repeats_needed(spread=0.02, design=FIVE_FOLDS, margin=0.005, level=0.05) is None


# ----------------------------------------------------------------------------- by simulation


def null_study(rng, design: Design, configurations: int = 14, seeds: int = 3) -> list[np.ndarray]:
    """Differences from plain of configurations with no effect. Seeds: every configuration is paired
    with the same plain runs. Folds: results within a study correlate as folds sharing training data
    do (correlation 1/K, the model Nadeau and Bengio's correction assumes)."""
    if design.folds:
        n, rho = design.folds * design.rounds, 1 / design.folds
        return [
            0.01 * (math.sqrt(1 - rho) * rng.normal(size=n) + math.sqrt(rho) * rng.normal())
            for _ in range(configurations)
        ]
    plain = rng.normal(0, 0.01, seeds)
    return [rng.normal(0, 0.01, seeds) - plain for _ in range(configurations)]


@pytest.mark.parametrize("design", [SEEDS, FIVE_FOLDS, TWO_BY_FIVE], ids=lambda design: design.name)
def test_under_no_effect_a_study_of_14_configurations_says_helps_or_hurts_at_most_5_percent_of_the_time(design):
    rng, studies = np.random.default_rng(45), 400
    false = sum(
        bool(judged(null_study(rng, design), design)["verdict"].isin(study.JUDGED).any()) for _ in range(studies)
    )
    error = math.sqrt(0.05 * 0.95 / studies)
    assert false / studies <= 0.05 + 2 * error  # family-wise, simulation error allowed


def test_without_the_corrections_the_same_null_studies_would_be_wrong_far_more_often():
    rng = np.random.default_rng(45)
    per_comparison = [d for _ in range(100) for d in null_study(rng, FIVE_FOLDS)]
    plain_t = [stats.ttest_1samp(d, 0).pvalue <= 0.05 for d in per_comparison]  # no fold correction
    assert np.mean(plain_t) > 0.1  # folds share their training data: the plain t interval is too narrow
    seeds = [null_study(rng, SEEDS) for _ in range(200)]
    unadjusted = [any(stats.ttest_1samp(d, 0).pvalue <= 0.05 for d in one) for one in seeds]
    assert np.mean(unadjusted) > 0.3  # 14 comparisons at 95% each: about half of the studies


@pytest.mark.parametrize("design", [SEEDS, FIVE_FOLDS], ids=lambda design: design.name)
def test_the_95_percent_interval_covers_a_known_effect_about_95_percent_of_the_time(design):
    rng, effect, trials = np.random.default_rng(7), 0.004, 1000
    differences = [effect + d for _ in range(trials // 10) for d in null_study(rng, design, configurations=10)]
    found = judged(differences, design)  # one family of 1000: only the unadjusted columns are read
    covered = (found["d_test_accuracy_low_unadjusted"] <= effect) & (effect <= found["d_test_accuracy_high_unadjusted"])
    assert abs(covered.mean() - 0.95) <= 3 * math.sqrt(0.05 * 0.95 / trials)


# ----------------------------------------------------------------------------- the table and the gate


def verdicts_of(table_rows: list[tuple[str, bool, str, float]]) -> pd.DataFrame:
    table = pd.DataFrame(table_rows, columns=["configuration", "plain", "repeat", "test_accuracy"])
    table["setup"] = "same"
    return study.verdict_table(table, "test_accuracy", ["test_accuracy"], Study(SEEDS, 0.005, {}))


def test_a_repeat_without_a_plain_partner_is_not_paired_and_is_counted():
    verdicts = verdicts_of(
        [("none", True, "1", 0.90), ("none", True, "2", 0.91), ("l2", False, "1", 0.93), ("l2", False, "3", 0.99)]
    )
    l2 = verdicts.set_index("configuration").loc["l2"]
    assert (l2["runs"], l2["n"], l2["dropped"], l2["d_test_accuracy"]) == (2, 1, 2, pytest.approx(0.03))
    assert l2["verdict"] == Verdict.NO_VERDICT and study_report.verdict_words(l2) == "1 repeat: no verdict"
    assert study_report.verdict_rows(verdicts, "test_accuracy", ["test_accuracy"], "seeds")["n"].tolist() == [
        "2",
        "1 (2 unpaired)",
    ]


def test_the_best_configuration_is_one_that_helps_else_only_the_top_mean_is_named():
    verdicts = pd.DataFrame(
        {
            "configuration": ["none", "l2", "dropout"],
            "mean_test_accuracy": [0.90, 0.93, 0.91],
            "verdict": [Verdict.PLAIN, Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE],
        }
    )
    assert study_report.best_configuration(verdicts, "test_accuracy") is None
    assert study_report.top_mean_configuration(verdicts, "test_accuracy") == "l2"
    verdicts.loc[2, "verdict"] = Verdict.HELPS
    assert study_report.best_configuration(verdicts, "test_accuracy") == "dropout"


def test_requirements_name_a_configuration_by_its_label_or_its_only_group():
    verdicts = pd.DataFrame(
        {
            "configuration": ["none", "l2 callbacks=basic", "l2 callbacks=default", "dropout"],
            "plain": [True, False, False, False],
            "n": [3, 3, 3, 3],
            "d_test_accuracy": [math.nan, 0.02, 0.01, 0.0],
            "d_test_accuracy_low": [math.nan, 0.01, -0.01, -0.02],
            "d_test_accuracy_high": [math.nan, 0.03, 0.03, 0.02],
        }
    )
    assert study_report.parse_requirement("dropout: d_test_accuracy <= 0.05", verdicts).configuration == "dropout"
    basic = study_report.parse_requirement("l2 callbacks=basic: d_test_accuracy >= 0", verdicts)
    assert study_report.judge(basic, verdicts) is None
    default = study_report.parse_requirement("l2 callbacks=default: d_test_accuracy >= 0", verdicts)
    assert study_report.judge(default, verdicts).endswith("the interval's lower bound is -0.01")
    with pytest.raises(study_report.RequirementError, match="'l2' is 2 configurations, name one"):
        study_report.parse_requirement("l2: d_test_accuracy >= 0", verdicts)
    with pytest.raises(study_report.RequirementError, match="'none': no such regularised configuration"):
        study_report.parse_requirement("none: d_test_accuracy >= 0", verdicts)


def test_parent_metrics_are_in_points_rounded_under_readable_keys():
    verdicts = pd.DataFrame(
        {
            "configuration": ["none", "l1+l2 callbacks=basic", "dropout  #2"],
            "plain": [True, False, False],
            "runs": [3, 3, 3],
            "mean_test_accuracy": [0.9703703820705414, 0.97777, 0.97037],
            "d_test_accuracy": [0.0, 0.0074074, 1.99e-8],
        }
    )
    found = study_report.parent_metrics(verdicts, "test_accuracy", 1 / 270)
    assert found == {
        "plain_test_accuracy": 0.9704,
        "best_test_accuracy": 0.9778,
        "d_test_accuracy_pp.l1_l2.callbacks_basic": 0.74,
        "d_test_accuracy_pp.dropout.2": 0.0,
    }
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", key) for key in found)
    losses = verdicts.rename(columns={"mean_test_accuracy": "mean_test_loss", "d_test_accuracy": "d_test_loss"})
    assert study_report.parent_metrics(losses, "test_loss", None)["d_test_loss.l1_l2.callbacks_basic"] == 0.007407
