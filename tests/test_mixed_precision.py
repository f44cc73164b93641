"""SupConModel under Keras mixed-precision policies: the loss is computed in
float32 and float16 uses loss scaling; bfloat16 also under XLA (a recipe's
`mixed_precision` and `jit_compile`, as examples/pretrain.py compiles it)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from tests import tiny


@pytest.fixture
def policy(request):
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(request.param)
    yield request.param
    keras.mixed_precision.set_dtype_policy(previous)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"], indirect=True)
def test_trains_under_mixed_precision(policy):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # Two well-separated classes of 8x8 images, two views each.
    y = rng.integers(0, 2, size=64).astype("int32")
    base = np.where(y[:, None, None, None] == 0, 60.0, 190.0)
    views = (base[:, None] + rng.normal(0, 40, size=(64, 2, 8, 8, 1))).clip(0, 255)
    encoder = tiny.encoder((8, 8, 1))
    model = sct.models.SupConModel(encoder, head=sct.heads.ProjectionHead(16))
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  jit_compile=policy == "mixed_bfloat16")
    assert model.jit_compile is (policy == "mixed_bfloat16")
    assert model.dtype_policy.name == policy
    assert model.compute_dtype == policy.split("_")[1]
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    # The loss object computes in float32 whatever the policy.
    z = model(tf.constant(views[:8], tf.float32))
    assert z.dtype == tf.as_dtype(policy.split("_")[1])
    assert model.loss(y[:8], z).dtype == tf.float32
    ds = tf.data.Dataset.from_tensor_slices((views.astype("float32"), y)).batch(
        16, drop_remainder=True)
    losses = model.fit(ds, epochs=4, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.05, losses
