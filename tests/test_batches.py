"""The runner's NumPy batches (JAX and PyTorch; tests/test_backends.py runs this file on both): each
epoch's order is the seed's and the epoch's alone, and a resumed fit trains on the same orders."""

from __future__ import annotations

import keras
import numpy as np

from experiments.batches import Batches, EpochOrder
from experiments.data import Split

SPLIT = Split(np.arange(10, dtype="float32").reshape(10, 1), np.arange(10))


class Served(Batches):
    """Batches that note each one they hand out, with the epoch it was meant for."""

    def __getitem__(self, index):
        x, y = super().__getitem__(index)
        self.served.append((self.epoch, y.tolist()))
        return x, y


def trained_orders(initial_epoch: int, epochs: int) -> dict[int, list[int]]:
    """By epoch, the labels in the order fit trained on them (the last batches each epoch: a backend
    may read one ahead before the first epoch, to build the model)."""
    batches = Served(SPLIT, 4, shuffle_seed=7, start_epoch=initial_epoch)
    batches.served = []
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(10)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(
        batches, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=0, callbacks=[EpochOrder(batches)]
    )
    orders = {}
    for epoch in range(initial_epoch, epochs):
        labels = [batch for served_epoch, batch in batches.served if served_epoch == epoch][-len(batches) :]
        orders[epoch] = [label for batch in labels for label in batch]
    return orders


def test_each_epoch_trains_on_its_own_seeded_order_and_a_resumed_fit_on_the_same():
    full = trained_orders(0, 4)
    for epoch, order in full.items():
        assert order == np.random.default_rng([7, epoch]).permutation(10).tolist(), epoch
    assert len({tuple(order) for order in full.values()}) == 4  # a new order each epoch
    assert trained_orders(2, 4) == {2: full[2], 3: full[3]}


def test_without_a_seed_the_split_keeps_its_order():
    batches = Batches(SPLIT, 4)
    assert len(batches) == 3 and [batches[i][1].tolist() for i in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
