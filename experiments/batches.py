"""NumPy batches for every Keras backend: the runner's input pipeline on JAX and PyTorch (TensorFlow
keeps tf.data, see experiments.data.make_pipeline and docs/benchmarks.md)."""

from __future__ import annotations

import keras
import numpy as np

from experiments.data import Split, steps_per_epoch


class Batches(keras.utils.PyDataset):
    """A split in batches, in one seeded order per epoch when shuffled (training).

    Epoch k's order depends on the seed and k alone, so a run resumed at epoch k sees the orders it
    would have seen had it not stopped. The epoch is told by ``EpochOrder`` at each epoch's begin,
    not counted from Keras' ``on_epoch_end`` calls: JAX's trainer reads a batch ahead to build the
    model and starts the epochs afresh after it. Without a seed: the split's own order.
    """

    def __init__(self, split: Split, batch_size: int, shuffle_seed: int | None = None, start_epoch: int = 0):
        super().__init__()  # one worker, no processes: batches are slices of arrays in memory
        self.split, self.batch_size, self.shuffle_seed = split, batch_size, shuffle_seed
        self.set_epoch(start_epoch)

    def __len__(self) -> int:
        return steps_per_epoch(self.split, self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.split.x[picked], self.split.y[picked]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.shuffle_seed is None:
            self.order = np.arange(len(self.split))
        else:
            self.order = np.random.default_rng([self.shuffle_seed, epoch]).permutation(len(self.split))


class EpochOrder(keras.callbacks.Callback):
    """Before each epoch, the training batches take that epoch's order (fit's own epoch number, so a
    resumed fit's ``initial_epoch`` counts)."""

    def __init__(self, batches: Batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)
