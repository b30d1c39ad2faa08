"""Faults injected into real training runs through config (e.g. +callbacks.fault=...)."""

import keras


class RaiseAtEpoch(keras.callbacks.Callback):
    """An error raised inside fit, as a broken layer or data pipeline would."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"injected fault at epoch {epoch}")


class RaiseAtStep(keras.callbacks.Callback):
    """The same, when the optimizer reaches a step: in the middle of an epoch."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise RuntimeError(f"injected fault at step {self.step}")


class StopServerWhenTrainingEnds(keras.callbacks.Callback):
    """The tracking server goes down as the last epoch ends (after the runner's tracker, which comes
    first, has seen it), before anything of the end is sent. A resume keeps the run's config, this
    callback with it: by then that server is gone, and nothing happens."""

    def __init__(self, server_pid: int):
        super().__init__()
        self.server_pid = server_pid

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.params["epochs"] - 1:
            return
        import contextlib
        import os
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server_pid, signal.SIGTERM)  # the server and its workers
