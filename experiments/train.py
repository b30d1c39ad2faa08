"""Train one Keras model, tracked in MLflow: ``python -m experiments.train model=cnn reg=l2``.

compose -> check -> build -> start the run -> fit -> test -> end the run.
"""

from __future__ import annotations

from experiments import early_interrupt  # first: Ctrl-C during the imports below is one line

# isort: split
import logging
import signal
import sys
import warnings
from contextlib import contextmanager

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments.backends import load_training
from experiments.checks import ConfigError, check_class_weight_labels, check_config
from experiments.cli import expand_quoted_option, overlong_override_key
from experiments.cluster import register as register_cpus_per_job
from experiments.data import load_splits
from experiments.hydra_files import redact_hydra_files
from experiments.preflight import check_output_paths, check_store
from experiments.resume import prepare_resume
from experiments.search import register as register_search_direction
from experiments.tracked_run import TrackedRun, TrainingStopped, build_tracker
from plugins.redaction import install_log_redaction, redact_text
from plugins.sweep_stop import in_driver, request_stop, stop_requested

register_search_direction()  # before Hydra composes: conf/experiment/search.yaml reads it
register_cpus_per_job()  # and conf/hydra/launcher/ray.yaml this
# conf/hydra/launcher/{ray,submitit_*}.yaml set the plugins' launchers up for this project under the
# plugins' own names, and Hydra checks each against the plugin's schema of that name, as wanted.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/.*' is validated against ConfigStore schema")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Train, evaluate the test split with the best weights, record it all; return the best monitored value."""
    install_log_redaction()
    redact_hydra_files()
    logging.raiseExceptions = False  # a log file on a full disk must not print a traceback per line
    with one_line_errors():
        refuse_if_the_sweep_stopped()
        with nothing_trained_if_interrupted():
            cfg, resume, splits = load_checked_input(cfg)
            training = (
                load_training()
            )  # Keras and its backend load only now (seconds, and noisy), once the input is good

            job = training.prepare(cfg, splits, resume)
            tracker = build_tracker(cfg, splits, resume)
        with training.stop_on_signal() as stopper, TrackedRun(tracker, cfg, splits, resume) as run:
            # In the run: a signal during the test (no batch left to finish) stops at once, and it ends KILLED.
            tested = training.fit_and_test(job, cfg, tracker, stopper, resume)
            run.finish(tested.metrics, tested.tags, tested.matrix)
        training.clear()
    return tracker.best_value if tracker.best_value is not None else float("nan")


def load_checked_input(cfg: DictConfig):
    """(config, resume point, data splits), or a ConfigError with no MLflow run touched."""
    check_config(cfg)
    check_store(cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name, cfg.mlflow.wait_for_server_s)
    cfg, resume = prepare_resume(cfg, list(HydraConfig.get().overrides.task))
    check_config(cfg)  # a resumed run's own config, with this command's overrides on top
    check_output_paths(cfg)
    splits = load_splits(cfg.data, seed=cfg.trainer.seed)
    check_class_weight_labels(cfg.trainer.class_weight, splits.num_classes)
    return cfg, resume, splits


def refuse_if_the_sweep_stopped() -> None:
    """A job of a sweep that a signal stopped before the job began does not begin."""
    signum = stop_requested()
    if signum is not None:
        name = signal.Signals(signum).name
        raise TrainingStopped(f"the sweep was stopped by {name} before this job began", 128 + signum, whole_sweep=True)


@contextmanager
def nothing_trained_if_interrupted():
    """Ctrl-C before training begins (loading data, TensorFlow's import): one line, exit 130."""
    stopped = TrainingStopped("interrupted before training began; nothing was trained", 130, whole_sweep=True)
    try:
        yield
    except KeyboardInterrupt:
        raise stopped from None
    if early_interrupt.came():  # its KeyboardInterrupt was lost in a finaliser
        raise stopped


@contextmanager
def one_line_errors():
    """What the user must fix or should know (a bad value: exit 2; an interrupt: 128 + signal; a NaN
    loss: 1) is one line on stderr, no traceback. In a sweep Hydra records the job as failed and goes
    on with the next, unless the error is meant for the whole sweep (an interrupt)."""
    try:
        yield
    except (ConfigError, TrainingStopped) as error:
        whole_sweep = getattr(error, "whole_sweep", False)
        if HydraConfig.get().mode == RunMode.MULTIRUN and whole_sweep:
            request_stop(error.exit_code - 128)  # no job of the sweep begins after this
        if HydraConfig.get().mode == RunMode.MULTIRUN and (not whole_sweep or not in_driver()):
            # Hydra records the job as failed; a worker process (joblib) then returns to its driver,
            # which waits for every job and exits with the signal's code itself.
            raise
        print(f"error: {redact_text(str(error))}", file=sys.stderr)
        raise SystemExit(getattr(error, "exit_code", 2)) from None


if __name__ == "__main__":
    sys.argv = expand_quoted_option(sys.argv, "--overrides")
    overlong = overlong_override_key(sys.argv[1:])
    if overlong:
        print(f"error: {overlong}", file=sys.stderr)
        sys.exit(2)
    main()
