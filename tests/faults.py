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


class StopServerWhenTrainingEnds(keras.callbacks.Callback):
    """The tracking server goes down as training ends, before anything of the end is sent."""

    def __init__(self, server_pid: int):
        super().__init__()
        self.server_pid = server_pid

    def on_train_end(self, logs=None):
        import os
        import signal

        os.killpg(self.server_pid, signal.SIGTERM)  # the server and its workers
