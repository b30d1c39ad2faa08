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
