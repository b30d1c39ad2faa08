"""Signals: held while a run's files are written, one line for Ctrl-C at start-up (fast, in-process
or a bare interpreter; the real training cases are in test_reliability.py)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys

import pytest

from experiments.tracked_run import TrainingStopped
from experiments.train import nothing_trained_if_interrupted
from plugins.interrupt import StopOnSignal, TrainingInterrupted, signals_held
from plugins.sweep_stop import STOP_FILE_ENV, SweepStop, stop_requested
from tests.conftest import ROOT


def test_a_signal_inside_a_held_block_is_raised_when_the_block_is_done():
    done, handler = [], signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the rest of the block")
    assert done == ["the rest of the block"]
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_held_signal_goes_to_the_handler_that_was_in_force():
    with StopOnSignal() as stopper:
        stopper.received = signal.SIGTERM  # the first signal came during training
        stopper.on_train_end()
        with pytest.raises(TrainingInterrupted) as raised:
            with signals_held():
                os.kill(os.getpid(), signal.SIGHUP)
                os.kill(os.getpid(), signal.SIGINT)
        assert raised.value.exit_code == 128 + signal.SIGHUP  # the first of the two
        assert signal.getsignal(signal.SIGINT) == stopper._on_signal


def test_ctrl_c_before_training_is_one_line_and_exit_130():
    with pytest.raises(TrainingStopped) as raised, nothing_trained_if_interrupted():
        raise KeyboardInterrupt
    assert raised.value.exit_code == 130 and raised.value.whole_sweep
    assert str(raised.value) == "interrupted before training began; nothing was trained"


class RaisesWhenCollected:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # Python drops the KeyboardInterrupt this raises here


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_lost_in_a_finaliser_still_stops_before_training(monkeypatch):
    from experiments import early_interrupt

    monkeypatch.setattr(early_interrupt, "_came", [])
    previous = signal.signal(signal.SIGINT, early_interrupt._note_and_raise)
    try:
        with pytest.raises(TrainingStopped), nothing_trained_if_interrupted():
            RaisesWhenCollected()
            gc.collect()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_the_imports_is_one_line():
    startup = "import experiments.early_interrupt, os, signal, time; os.kill(os.getpid(), signal.SIGINT); time.sleep(5)"
    done = subprocess.run([sys.executable, "-c", startup], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGINT  # the shell's 130
    assert done.stderr == "error: interrupted (Ctrl-C)\n"


def test_a_sweep_s_stop_file_stops_training_as_its_signal_would(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("plugins.interrupt.time.monotonic", lambda: clock[0])
    stop_file = tmp_path / ".stopped"
    stopper = StopOnSignal(stop_file=stop_file)
    stopper.on_train_batch_begin(0)  # no stop file: training goes on
    stop_file.write_text(str(int(signal.SIGTERM)))  # the driver of a sweep on a Ray cluster was signalled
    clock[0] += 0.5
    stopper.on_train_batch_begin(1)  # looked at once a second at most: not yet
    clock[0] += 0.6
    with pytest.raises(TrainingInterrupted) as raised:
        stopper.on_train_batch_begin(2)
    assert raised.value.exit_code == 128 + signal.SIGTERM
    assert StopOnSignal(stop_file=tmp_path / "half-written").received is None
    (tmp_path / "half-written").write_text("")
    StopOnSignal(stop_file=tmp_path / "half-written").on_epoch_begin(0)  # an empty file is no signal yet


@pytest.mark.parametrize("content", ["999", "-15", "0", "abc", "15" * 40])
def test_a_crafted_stop_file_is_no_signal(tmp_path, monkeypatch, content):
    """Anyone who can write the sweep's folder can write its stop file: only a signal a sweep stops on
    counts, and anything else neither stops training nor crashes the job or the sweep's end."""
    stop_file = tmp_path / ".stopped"
    stop_file.write_text(content)
    monkeypatch.setenv(STOP_FILE_ENV, str(stop_file))
    assert stop_requested() is None and SweepStop(tmp_path).signal_received is None
    StopOnSignal(stop_file=stop_file).on_train_batch_begin(0)  # training goes on
    stop_file.write_text(str(int(signal.SIGHUP)))
    assert stop_requested() == signal.SIGHUP and SweepStop(tmp_path).signal_received == signal.SIGHUP
