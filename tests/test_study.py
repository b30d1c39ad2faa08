"""The study's statistics on made-up differences: the interval, the verdict, the repeats a
difference needs, and the requirements of the CI gate."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiments import study, study_report


def test_the_t_interval_is_the_one_computed_by_hand():
    # mean 2, n 4: t(0.975, 3) = 3.182446 from a table, half width 3.182446 * sd / sqrt(4)
    low, high = study.t_interval(np.array([1.0, 2.0, 3.0, 2.0]))
    spread = np.std([1.0, 2.0, 3.0, 2.0], ddof=1)
    assert (low, high) == pytest.approx((2 - 3.182446 * spread / 2, 2 + 3.182446 * spread / 2), abs=1e-6)
    assert all(math.isnan(bound) for bound in study.t_interval(np.array([0.5])))


@pytest.mark.parametrize(
    ("low", "high", "n", "higher_better", "verdict"),
    [
        (0.01, 0.03, 3, True, "helps"),
        (-0.03, -0.01, 3, True, "hurts"),
        (-0.03, -0.01, 3, False, "helps"),  # a loss that fell
        (-0.01, 0.02, 5, True, "no clear difference"),
        (math.nan, math.nan, 1, True, "1 repeat: no verdict"),
        (math.nan, math.nan, 0, True, "0 repeats: no verdict"),
    ],
)
def test_the_verdict_follows_the_interval_never_one_seed(low, high, n, higher_better, verdict):
    assert study.verdict(low, high, n, higher_better) == verdict


def test_repeats_needed_is_the_fewest_pairs_whose_interval_would_exclude_zero():
    needed = study.repeats_needed(mean=0.01, spread=0.02)
    half = [study.stats.t.ppf(0.975, n - 1) * 0.02 / math.sqrt(n) for n in (needed - 1, needed)]
    assert half[0] >= 0.01 > half[1]
    assert study.repeats_needed(0.0, 0.02) is None
    assert study.repeats_needed(1e-9, 1.0) == study.MOST_REPEATS + 1


def verdicts_of(table_rows: list[tuple[str, bool, str, float]]) -> pd.DataFrame:
    table = pd.DataFrame(table_rows, columns=["configuration", "plain", "repeat", "test_accuracy"])
    table["setup"] = "same"
    return study.verdict_table(table, "test_accuracy", ["test_accuracy"])


def test_a_repeat_without_a_plain_partner_is_not_paired():
    verdicts = verdicts_of(
        [("none", True, "1", 0.90), ("none", True, "2", 0.91), ("l2", False, "1", 0.93), ("l2", False, "3", 0.99)]
    )
    l2 = verdicts.set_index("configuration").loc["l2"]
    assert (l2["runs"], l2["n"], l2["d_test_accuracy"]) == (2, 1, pytest.approx(0.03))
    assert l2["verdict"] == "1 repeat: no verdict"


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


def test_a_long_answer_is_cut_to_a_tag_s_length_at_a_line_and_says_where_the_rest_is():
    note = "**headline**\n\n" + "".join(f"| config {i} | 3 | helps |\n" for i in range(1000))
    cut = study_report.within(note, 8000)
    assert len(cut) <= 8000 and cut.startswith("**headline**") and cut.endswith("comparison/verdicts.md_\n")
    assert cut.splitlines()[-3].startswith("| config ") and cut.splitlines()[-3].endswith("|")  # whole lines
    assert study_report.within("short", 8000) == "short"
    assert len(study_report.metric_key("l2 " + "x=1 " * 100)) <= 200
