"""`.keras` files written by earlier versions load and train on.

`tests/fixtures/<method>_65cb866.keras`: one small model per method, trained
one epoch and saved with the library at commit 65cb866 (before heads moved
to `supcon_tf.heads`, losses took their extras as call arguments and methods
joined the registry), with its outputs on four images
(`<method>_65cb866.npz`)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
OLD = ["barlow", "byol", "moco", "npid", "pcl", "simsiam", "supcon", "swav", "vicreg"]


@pytest.mark.parametrize("name", OLD)
def test_a_file_of_commit_65cb866_loads_gives_its_outputs_and_trains_on(name):
    model = keras.models.load_model(os.path.join(FIXTURES, f"{name}_65cb866.keras"))
    saved = np.load(os.path.join(FIXTURES, f"{name}_65cb866.npz"))
    assert type(model) is sct.methods.get(name)
    np.testing.assert_allclose(model(saved["x"]), saved["out"], atol=1e-6)
    assert int(model.optimizer.iterations.numpy()) == int(saved["steps"])
    # It trains on, with the loss and state it was saved with.
    x = np.concatenate([saved["x"]] * 4)
    y = np.arange(16) % 4
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if model.indexed:
        ds = sct.data.with_index(ds)
    if model.labels == "drop":
        ds = ds.map(lambda *e: e[0])
    history = model.fit(ds.batch(8, drop_remainder=True), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert int(model.optimizer.iterations.numpy()) == int(saved["steps"]) + 2
