"""A regulariser is defined once (experiments/regularisers.py): its label, params and checks follow,
and an option defined nowhere is refused rather than pooled with the plain runs."""

from __future__ import annotations

import pytest
from omegaconf import open_dict

from experiments import regularisers
from experiments.checks import ConfigError, check_config
from experiments.regularisers import Regulariser, Setting
from experiments.rules import rate
from experiments.run_identity import training_params


def test_every_regulariser_in_conf_is_defined_and_labels_the_run(compose_cfg):
    assert regularisers.undefined(compose_cfg().reg) == []
    assert training_params(compose_cfg("reg=[l2,dropout]"))["reg.name"] == "l2+dropout"
    assert training_params(compose_cfg("reg=combined"))["reg.name"] != "none"


def test_an_option_no_regulariser_defines_is_refused_not_pooled_with_plain(compose_cfg):
    cfg = compose_cfg("+reg.spectral_norm=0.5")  # added to conf/ (or a command) but defined nowhere
    with pytest.raises(ConfigError, match=r"^reg.spectral_norm: no regulariser defines it .*known: l1, l2, dropout"):
        check_config(cfg)


def test_a_regulariser_added_to_the_definition_labels_checks_and_switches_its_settings(compose_cfg, monkeypatch):
    noise = Regulariser(Setting("noise", rate, "a number in [0, 1)"), (Setting("noise_seed", lambda v: True, "any"),))
    monkeypatch.setattr(regularisers, "REGULARISERS", (*regularisers.REGULARISERS, noise))
    cfg = compose_cfg("reg=l2", "+reg.noise=0.1", "+reg.noise_seed=3")
    check_config(cfg)
    assert regularisers.label(cfg.reg) == "l2+noise"
    assert regularisers.switched_by()["reg.noise_seed"] == "reg.noise"
    with open_dict(cfg):
        cfg.reg.noise = 1.5
    with pytest.raises(ConfigError, match=r"^reg.noise=1.5: expected a number in \[0, 1\)$"):
        check_config(cfg)
