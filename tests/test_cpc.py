"""CPC: the loss against a float64 loop of its definition (values,
gradients), two replicas against one device, the context network's
masking (a position sees its own row and the rows above only), the patch
grid, layer norm's independence of the batch, and CPCModel's recipe and
refusals (fit, save/load, resume and two replicas: the contract test)."""

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


def test_first_step_offsets_every_prediction():
    """Predictions of the rows 2 and 3 ahead (CPC v2 skips the nearest
    rows): the loop's value, the rows past the grid ignored, refusals."""
    want = reference.cpc_reference(P, Z, first_step=2)
    np.testing.assert_allclose(sct.losses.cpc_loss(P, Z, first_step=2), want,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        sct.losses.CPCLoss(reduction=None)(None, P, targets=Z, first_step=2), want,
        rtol=1e-5, atol=1e-5)
    assert not np.allclose(want, reference.cpc_reference(P, Z))
    changed = P.copy()
    changed[:, 0, 2:], changed[:, 1, 1:] = 100.0, -100.0
    np.testing.assert_allclose(sct.losses.cpc_loss(changed, Z, first_step=2), want,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="up to 4 rows ahead"):
        sct.losses.cpc_loss(P, Z, first_step=3)
    with pytest.raises(ValueError, match="first_step"):
        sct.losses.cpc_loss(P, Z, first_step=0)


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


def test_patch_grid_cuts_the_patches_at_their_stride():
    images = RNG.uniform(0, 255, (2, 13, 11, 2)).astype("float32")
    grid = np.asarray(sct.encoders.PatchGrid(5, 3)(images))
    assert grid.shape == (2, 3, 3, 5, 5, 2)
    for i in range(3):
        for j in range(3):
            np.testing.assert_array_equal(grid[:, i, j], images[:, 3 * i:3 * i + 5,
                                                                3 * j:3 * j + 5])


def test_grid_encoder_is_the_mean_of_the_patches_codes_and_its_map_their_grid():
    keras.utils.set_random_seed(0)
    patch = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 3),
                              keras.layers.Flatten(), keras.layers.Dense(4)])
    encoder = sct.encoders.patch_grid_encoder(patch, (16, 16, 1), 8, 4)
    images = RNG.uniform(0, 255, (2, 16, 16, 1)).astype("float32")
    codes = np.zeros((2, 3, 3, 4), "float32")
    for i in range(3):
        for j in range(3):
            codes[:, i, j] = np.asarray(patch(images[:, 4 * i:4 * i + 8, 4 * j:4 * j + 8]))
    np.testing.assert_allclose(np.asarray(sct.dense.feature_map(encoder)(images)), codes,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(encoder(images)), codes.mean(axis=(1, 2)),
                               rtol=1e-5, atol=1e-5)


def test_layer_norm_resnet_shares_no_statistics_across_the_batch():
    x = RNG.uniform(0, 255, (4, 8, 8, 1)).astype("float32")
    layer = sct.encoders.resnet18((8, 8, 1), width=0.0625, norm="layer")
    assert not any(isinstance(v, keras.layers.BatchNormalization) for v in layer.layers)
    np.testing.assert_allclose(np.asarray(layer(x[:1], training=True)),
                               np.asarray(layer(x, training=True))[:1], rtol=1e-4, atol=1e-5)
    batch = sct.encoders.resnet18((8, 8, 1), width=0.0625)
    assert not np.allclose(np.asarray(batch(x[:1], training=True)),
                           np.asarray(batch(x, training=True))[:1], atol=1e-3)
    with pytest.raises(ValueError, match="norm"):
        sct.encoders.resnet18((8, 8, 1), norm="group")


def test_recipe_builds_a_layer_norm_patch_encoder_and_bad_grids_are_refused():
    model, _ = sct.methods.build({"method": "cpc", "encoder": {"width": 0.0625}},
                                 (28, 28, 1), num_classes=10)
    assert isinstance(model, sct.models.CPCModel)
    assert model.patch_encoder.input_shape == (None, 8, 8, 1)
    norms = {type(v).__name__ for v in model.patch_encoder.layers if "bn" in v.name}
    assert norms == {"GroupNormalization"}
    assert sct.dense.feature_map(model.encoder).output_shape == (None, 6, 6, 32)
    assert (model.first_step, model.steps) == (3, 3)           # CPC v2's single offset
    patch = model.patch_encoder
    with pytest.raises(ValueError, match="steps"):
        sct.models.CPCModel(patch, image_shape=(28, 28, 1), steps=6)
    with pytest.raises(ValueError, match="first_step"):
        sct.models.CPCModel(patch, image_shape=(28, 28, 1), steps=2, first_step=3)
    with pytest.raises(ValueError, match="directions"):
        sct.models.CPCModel(patch, image_shape=(28, 28, 1), directions=("left",))
    with pytest.raises(ValueError, match="image_shape"):
        sct.models.CPCModel(patch)


def test_contrastive_accuracy_finds_the_patch_first_step_rows_ahead():
    """Predictions equal to the patches 2 rows below score 100%; the same
    predictions read as 1 row ahead score near chance."""
    model, _ = sct.methods.build({"method": "cpc", "encoder": {"width": 0.0625},
                                  "model": {"steps": 2, "first_step": 2}},
                                 (28, 28, 1), num_classes=10)
    z = np.eye(108, dtype="float32").reshape(3, 6, 6, 108)      # each patch its own axis
    p = np.zeros((3, 1, 6, 6, 108), "float32")
    p[:, 0, :4] = 10.0 * z[:, 2:]
    out = {"z": tf.constant(z), "targets": [tf.constant(z)], "predictions": [tf.constant(p)]}
    model.update_metrics(None, out)
    assert model.contrastive_accuracy_tracker.result() == 1.0
    model.contrastive_accuracy_tracker.reset_state()
    model.first_step = 1
    model.update_metrics(None, out)
    assert model.contrastive_accuracy_tracker.result() < 0.1
