"""KernelModel.fit under a tf.distribute strategy feeds array inputs through one iterator for every epoch.

Keras re-creates the distributed iterator of array inputs at every epoch (seconds under a strategy, and a flow
epoch is often one step). ``fit`` turns the arrays into Keras' own batches, repeated, with ``steps_per_epoch``:
the batches, the flow, the History and the validation must be exactly those of the per-epoch arrays (the
environment variable ``CYNTK_FIT_ARRAYS_PER_EPOCH=1`` restores Keras' path, the reference here). A one-device
MirroredStrategy is a strategy too, so this runs in the test process (the multi-replica flows, the killed
worker and BackupAndRestore are in tests/test_distribute_*.py).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.distribute import input_lib

from cyntk.flows import KernelModel
from cyntk.geometry import fermat_quintic, to_real
from cyntk.kernels.fs import GaussianFSKernel

M = fermat_quintic()


@pytest.fixture(scope="module")
def data():
    x = to_real(M.sample_points(84, seed=5, chart=(0, 1)))
    return x[:60], KernelModel.targets(M, x[:60]), x[60:], KernelModel.targets(M, x[60:])


def run(monkeypatch, data, per_epoch, validation=True, **fit_kw):
    """A fit in a one-device MirroredStrategy; its alpha, History and the distributed iterators it created."""
    x, y, xv, yv = data
    monkeypatch.setenv("CYNTK_FIT_ARRAYS_PER_EPOCH", "1" if per_epoch else "0")
    iterators = []
    original = input_lib.DistributedDataset.__iter__

    def counted(self):
        iterators.append(self)
        return original(self)

    monkeypatch.setattr(input_lib.DistributedDataset, "__iter__", counted)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = KernelModel(GaussianFSKernel(0.3), x, M)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=2.0**-14))
    hist = model.fit(x, y, verbose=0, validation_data=(xv, yv) if validation else None, **fit_kw)
    return model.alpha.numpy(), hist, len(iterators)


def test_array_batches_flow_exactly_as_per_epoch_arrays_with_one_iterator(monkeypatch, data):
    kw = dict(batch_size=25, shuffle=False, epochs=4, initial_epoch=1, validation_batch_size=10)
    a_ref, h_ref, n_ref = run(monkeypatch, data, True, **kw)
    a, h, n = run(monkeypatch, data, False, **kw)
    assert np.any(a != 0.0)
    np.testing.assert_array_equal(a, a_ref)  # the same batches (25, 25, 10) in the same order: bit for bit
    assert h.history == h_ref.history and h.epoch == h_ref.epoch == [1, 2, 3]
    assert h.params == h_ref.params == {"verbose": 0, "epochs": 4, "steps": 3}
    assert set(h.history) >= {"loss", "val_loss"}
    assert n < n_ref


def test_shuffled_full_batch_flows_as_per_epoch_arrays_with_one_iterator(monkeypatch, data):
    # the full batch in a new order every epoch: the same flow up to the order of the sums
    a_ref, h_ref, n_ref = run(monkeypatch, data, True, validation=False, batch_size=60, epochs=3)
    a, h, n = run(monkeypatch, data, False, validation=False, batch_size=60, epochs=3)
    np.testing.assert_allclose(a, a_ref, rtol=1e-12, atol=1e-12 * np.abs(a_ref).max())
    np.testing.assert_allclose(h.history["loss"], h_ref.history["loss"], rtol=1e-12)
    assert h.params == h_ref.params
    assert n == 1 and n_ref >= 3  # one iterator for the fit, against (at least) one per epoch
