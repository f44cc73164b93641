"""Deep InfoMax's local objective and AMDIM's NCE against float64 loop
translations of the official code: values, gradients (finite differences)
and two replicas against one device."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from tests import reference

RNG = np.random.default_rng(5)
G = RNG.normal(size=(4, 6)).astype("float32")
LOCAL = RNG.normal(size=(4, 5, 6)).astype("float32")
CASES = {
    "dim_jsd": (lambda g, l: sct.losses.dim_loss(g, l, "jsd"),
                lambda g, l: reference.dim_reference(g, l, "jsd")),
    "dim_infonce": (lambda g, l: sct.losses.dim_loss(g, l, "infonce"),
                    lambda g, l: reference.dim_reference(g, l, "infonce")),
    "amdim": (lambda g, l: sct.losses.amdim_loss(3 * g, 3 * l, tclip=2.0),
              lambda g, l: reference.amdim_reference(3 * g, 3 * l, tclip=2.0)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_match_the_official_code(name):
    ours, theirs = CASES[name]
    np.testing.assert_allclose(ours(G, LOCAL), theirs(G, LOCAL), rtol=1e-5, atol=1e-5)
    g, loc = tf.constant(G), tf.constant(LOCAL)
    with tf.GradientTape() as tape:
        tape.watch([g, loc])
        total = tf.reduce_sum(ours(g, loc))
    grads = tape.gradient(total, [g, loc])
    for k, x in enumerate((G, LOCAL)):
        numeric = np.zeros(x.shape)
        for idx in list(np.ndindex(*x.shape))[::3]:
            up, down = [G.astype(np.float64), LOCAL.astype(np.float64)], \
                [G.astype(np.float64), LOCAL.astype(np.float64)]
            up[k][idx] += 1e-6
            down[k][idx] -= 1e-6
            numeric[idx] = (theirs(*up).sum() - theirs(*down).sum()) / 2e-6
            np.testing.assert_allclose(grads[k].numpy()[idx], numeric[idx], rtol=1e-3,
                                       atol=1e-4, err_msg=f"{name} {k} {idx}")


@pytest.mark.parametrize("name", ["dim_infonce", "amdim"])
def test_two_replicas_contrast_against_the_global_batch(name, strategy):
    ours, _ = CASES[name]
    one = ours(G, LOCAL).numpy()

    def replica(g, l):
        return ours(g, l)

    def split(ctx):
        r = ctx.replica_id_in_sync_group
        return G[2 * r:2 * r + 2], LOCAL[2 * r:2 * r + 2]

    g = strategy.experimental_distribute_values_from_function(lambda ctx: split(ctx)[0])
    loc = strategy.experimental_distribute_values_from_function(lambda ctx: split(ctx)[1])
    out = strategy.run(tf.function(replica), args=(g, loc))
    two = np.concatenate([t.numpy() for t in strategy.experimental_local_results(out)])
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)


def test_classes_and_argument_checks():
    assert float(sct.losses.DIMLoss("infonce")(None, G, local=LOCAL)) == pytest.approx(
        float(np.mean(sct.losses.dim_loss(G, LOCAL, "infonce"))), rel=1e-6)
    assert float(sct.losses.AMDIMLoss()(None, G, local=LOCAL)) == pytest.approx(
        float(np.mean(sct.losses.amdim_loss(G, LOCAL))), rel=1e-6)
    with pytest.raises(ValueError, match="estimator"):
        sct.losses.DIMLoss("nce")
    with pytest.raises(ValueError, match="logit_reg"):
        sct.losses.AMDIMLoss(logit_reg=-1.0)
    with pytest.raises(ValueError, match="local"):
        sct.losses.dim_loss(G, LOCAL[:, :, :3])
    with pytest.raises(ValueError, match="local"):
        sct.losses.AMDIMLoss()(None, G)
    # One image: no negatives; InfoNCE is 0.
    np.testing.assert_allclose(sct.losses.dim_loss(G[:1], LOCAL[:1], "infonce"), 0.0, atol=1e-6)


def _pooled_encoder():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_amdim_model_fits_round_trips_and_refuses_what_it_cannot_read(tmp_path):
    images, _ = next(iter(sct.data.load("fashion_mnist", "train[:32]").batch(32)))
    model = sct.models.DIMModel(_pooled_encoder(), objective="amdim", dim=16,
                                augmenter=sct.augment.simclr((28, 28, 1), seed=0))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(tf.data.Dataset.from_tensor_slices(images).batch(16), epochs=2,
                        verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and "contrastive_accuracy" in history
    two = tf.cast(tf.stack([images[:4], images[:4]], axis=1), tf.float32)
    out = model.forward(two, training=False)
    assert tuple(out["local"].shape) == (4, 2, 36, 16) and tuple(out["projections"].shape) == (4, 2, 16)
    path = str(tmp_path / "amdim.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(tf.cast(images[:4], tf.float32)),
                               model(tf.cast(images[:4], tf.float32)), atol=1e-6)
    assert loaded.objective == "amdim" and isinstance(loaded.loss, sct.losses.AMDIMLoss)
    with pytest.raises(ValueError, match="views=2"):
        sct.models.DIMModel(_pooled_encoder(), objective="amdim", views=1)
    with pytest.raises(ValueError, match="pooling"):
        sct.models.DIMModel(keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                              keras.layers.Dense(4)]))
    with pytest.raises(ValueError, match="DIMLoss or an AMDIMLoss"):
        model.compile(optimizer="adam", loss=sct.losses.SupConLoss())


def test_amdim_multiscale_sums_the_official_three_tasks(tmp_path):
    """`scales=2`: the loss is 1t5 + 1t7 + 5t5 (each both ways), from the
    last map, the named second map and one random location of the last map."""
    encoder = _pooled_encoder()
    second = encoder.layers[2].name                         # the first conv: 13 x 13
    model = sct.models.DIMModel(encoder, objective="amdim", dim=8, scales=2,
                                second_map=second)
    images = tf.cast(next(iter(sct.data.load("fashion_mnist", "train[:6]").batch(6)))[0],
                     tf.float32)
    views = tf.stack([images, tf.image.flip_left_right(images)], axis=1)
    model(images)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    out = model.forward(views, training=False)
    assert tuple(out["local"].shape) == (6, 2, 36, 8)
    assert tuple(out["local_2"].shape) == (6, 2, 169, 8)
    state = model.location_seed.state.numpy()
    total = float(model.contrastive_loss(None, None, out, None, training=True))
    model.location_seed.state.assign(state)
    picks = keras.random.randint((6, 2), 0, 36, seed=model.location_seed).numpy()
    g, local, local_2 = (np.asarray(out[k], np.float64) for k in ("projections", "local",
                                                                     "local_2"))

    def both_ways(source, target):
        return 0.5 * (np.mean(sct.losses.amdim_loss(source[:, 0], target[:, 1]))
                      + np.mean(sct.losses.amdim_loss(source[:, 1], target[:, 0])))

    source = np.stack([local[np.arange(6), v, picks[:, v]] for v in range(2)], axis=1)
    want = both_ways(g, local) + both_ways(g, local_2) + both_ways(source, local)
    assert total == pytest.approx(want, rel=1e-4)
    assert total > both_ways(g, local) + 1e-3
    # Fits, and round-trips with its second head.
    history = model.fit(tf.data.Dataset.from_tensor_slices(views).batch(3), epochs=1,
                        verbose=0).history
    assert np.isfinite(history["loss"][0])
    path = str(tmp_path / "amdim2.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.scales == 2 and loaded.second_map == second
    np.testing.assert_allclose(loaded.forward(views, training=False)["local_2"],
                               model.forward(views, training=False)["local_2"], atol=1e-5)
    # A supcon_tf ResNet's second map is the end of its third stage.
    resnet = sct.encoders.resnet18((28, 28, 1), width=0.0625)
    assert sct.models.DIMModel(resnet, objective="amdim", scales=2).second_map.startswith(
        "stage3_")
    with pytest.raises(ValueError, match="objective='amdim'"):
        sct.models.DIMModel(_pooled_encoder(), scales=2)
    with pytest.raises(ValueError, match="second_map"):
        sct.models.DIMModel(_pooled_encoder(), objective="amdim", scales=2)
    with pytest.raises(ValueError, match="second_map='nope'"):
        sct.models.DIMModel(_pooled_encoder(), objective="amdim", scales=2, second_map="nope")
    with pytest.raises(ValueError, match="scales"):
        sct.models.DIMModel(_pooled_encoder(), objective="amdim", scales=3)


def test_dim_reads_its_local_features_from_the_named_map(tmp_path):
    """`local_map`: DIM's locations come from the named layer (here the first
    convolution's 13 x 13, not the last map's 6 x 6), and the global feature
    stays the pooled one; it round-trips; AMDIM and unknown layers are refused."""
    encoder = _pooled_encoder()
    first = encoder.layers[2].name
    model = sct.models.DIMModel(encoder, dim=8, local_map=first)
    images = tf.cast(next(iter(sct.data.load("fashion_mnist", "train[:6]").batch(6)))[0],
                     tf.float32)
    model(images)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    out = model.forward(images[:, None], training=False)
    assert tuple(out["local"].shape) == (6, 1, 169, 8)
    sub = keras.Model(encoder.inputs, encoder.get_layer(first).output)
    want = model.local_head(tf.reshape(sub(images), [6, 169, -1]), training=False)
    np.testing.assert_allclose(out["local"][:, 0], want, atol=1e-5)
    np.testing.assert_allclose(out["features"][:, 0], encoder(images), atol=1e-5)
    total = float(model.contrastive_loss(None, None, out, None, training=True))
    assert total == pytest.approx(float(np.mean(sct.losses.dim_loss(
        out["projections"][:, 0], out["local"][:, 0], "jsd"))), rel=1e-5)
    path = str(tmp_path / "dim.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.local_map == first
    np.testing.assert_allclose(loaded.forward(images[:, None], training=False)["local"],
                               out["local"], atol=1e-5)
    with pytest.raises(ValueError, match="local_map='nope'"):
        sct.models.DIMModel(_pooled_encoder(), local_map="nope")
    with pytest.raises(ValueError, match="objective='amdim', local_map="):
        sct.models.DIMModel(_pooled_encoder(), objective="amdim", local_map=first)
    with pytest.raises(TypeError, match="local_map"):
        sct.models.DIMModel(_pooled_encoder(), local_map=2)
