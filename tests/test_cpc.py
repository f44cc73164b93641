"""CPC: the loss against a float64 loop of its definition (values,
gradients), two replicas against one device, and the context network's
masking (a position sees its own row and the rows above only)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from tests import reference

RNG = np.random.default_rng(2)
P = (0.5 * RNG.normal(size=(4, 2, 4, 3, 5))).astype("float32")
Z = (0.5 * RNG.normal(size=(4, 4, 3, 5))).astype("float32")


def test_loss_and_gradients_match_the_definition():
    np.testing.assert_allclose(sct.losses.cpc_loss(P, Z), reference.cpc_reference(P, Z),
                               rtol=1e-5, atol=1e-5)
    p, z = tf.constant(P), tf.constant(Z)
    with tf.GradientTape() as tape:
        tape.watch([p, z])
        total = tf.reduce_sum(sct.losses.cpc_loss(p, z))
    grads = tape.gradient(total, [p, z])
    for k, x in enumerate((P, Z)):
        for idx in list(np.ndindex(*x.shape))[::17]:
            up, down = [P.astype(np.float64), Z.astype(np.float64)], \
                [P.astype(np.float64), Z.astype(np.float64)]
            up[k][idx] += 1e-6
            down[k][idx] -= 1e-6
            numeric = (reference.cpc_reference(*up).sum()
                       - reference.cpc_reference(*down).sum()) / 2e-6
            np.testing.assert_allclose(grads[k].numpy()[idx], numeric, rtol=1e-3, atol=1e-4)
    # Rows whose target is outside the grid do not count.
    changed = P.copy()
    changed[:, 0, 3], changed[:, 1, 2:] = 100.0, -100.0
    np.testing.assert_allclose(sct.losses.cpc_loss(changed, Z), sct.losses.cpc_loss(P, Z),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="more than 4 rows"):
        sct.losses.cpc_loss(np.zeros((1, 4, 4, 3, 5)), Z[:1])
    with pytest.raises(ValueError, match="targets"):
        sct.losses.CPCLoss()(None, P)


def test_two_replicas_contrast_against_the_global_batch(strategy):
    one = sct.losses.cpc_loss(P, Z).numpy()

    def split(ctx, x):
        r = ctx.replica_id_in_sync_group
        return x[2 * r:2 * r + 2]

    p = strategy.experimental_distribute_values_from_function(lambda c: split(c, P))
    z = strategy.experimental_distribute_values_from_function(lambda c: split(c, Z))
    out = strategy.run(tf.function(sct.losses.cpc_loss), args=(p, z))
    two = np.concatenate([t.numpy() for t in strategy.experimental_local_results(out)])
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)


def test_context_sees_its_row_and_those_above_only(tmp_path):
    keras.utils.set_random_seed(0)
    ctx = sct.heads.CPCContext(steps=2, units=6, depth=3)
    z = RNG.normal(size=(2, 6, 5, 4)).astype("float32")
    base = ctx(z).numpy()
    assert base.shape == (2, 2, 6, 5, 4)
    for row in range(6):
        moved = z.copy()
        moved[:, row] += 1.0
        diff = np.abs(ctx(moved).numpy() - base).max(axis=(0, 1, 3, 4))      # per row
        assert np.all(diff[:row] == 0.0) and diff[row] > 0, (row, diff)
    model = keras.Sequential([keras.Input((6, 5, 4)), ctx])
    path = str(tmp_path / "ctx.keras")
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)(z), base, atol=1e-6)
    with pytest.raises(ValueError, match="kernel_size"):
        sct.heads.CPCContext(kernel_size=2)
