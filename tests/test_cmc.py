"""Contrastive Multiview Coding: the loss against a loop reference of the
paper's definition, the views' signals, the multi-view encoder and what
CMCModel refuses. (tests/test_contract.py fits, saves, resumes and runs it on
two replicas with the rest of the family.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from tests.reference import cmc_reference


@pytest.mark.parametrize("graph", ["core", "full"])
@pytest.mark.parametrize("views", [2, 3, 4])
def test_loss_matches_the_loop_reference(views, graph):
    z = np.random.default_rng(views).normal(size=(6, views, 5)).astype("float32")
    got = sct.losses.cmc_loss(z, temperature=0.2, graph=graph)
    np.testing.assert_allclose(got.numpy(), cmc_reference(z, 0.2, graph), rtol=1e-5)
    # The class reduces by Keras's mean; pairs: M - 1 (core) or M(M - 1)/2 (full).
    loss = sct.losses.CMCLoss(temperature=0.2, graph=graph)
    assert float(loss(None, z)) == pytest.approx(cmc_reference(z, 0.2, graph).mean(), rel=1e-5)
    assert len(sct.losses.cmc.view_pairs(views, graph)) == (
        views - 1 if graph == "core" else views * (views - 1) // 2)


def test_gradient_matches_finite_differences_of_the_reference():
    from tests.reference import finite_differences
    z = np.random.default_rng(0).normal(size=(4, 3, 3))
    var = tf.Variable(z.astype("float32"))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(sct.losses.cmc_loss(var, temperature=0.5, graph="full"))
    expected = finite_differences(lambda x: cmc_reference(x, 0.5, "full").sum(), z)
    np.testing.assert_allclose(tape.gradient(total, var).numpy(), expected, atol=2e-3)


def test_two_replicas_contrast_the_global_batch(strategy):
    z = np.random.default_rng(1).normal(size=(8, 3, 4)).astype("float32")
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(z).batch(8))
    per_replica = strategy.run(lambda x: sct.losses.cmc_loss(x, graph="full"),
                               args=(next(iter(ds)),))
    got = np.concatenate([v.numpy() for v in strategy.experimental_local_results(per_replica)])
    np.testing.assert_allclose(got, cmc_reference(z, 0.07, "full"), rtol=1e-4)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"graph": "star"}, ValueError, "`graph` must be one of ('core', 'full'). Received: graph='star'"),
    ({"temperature": 0}, ValueError, "Received: temperature=0"),
    ({"temperature": "hot"}, TypeError, "Received: temperature='hot'"),
])
def test_loss_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=__import__("re").escape(message)):
        sct.losses.CMCLoss(**kwargs)


def test_loss_needs_two_views():
    with pytest.raises(ValueError, match=r"at least 2 views. Received: y_pred.shape=\(4, 1, 8\)"):
        sct.losses.cmc_loss(np.ones((4, 1, 8), "float32"))


def test_signals_are_the_image_its_edges_and_its_second_derivative():
    step = np.zeros((1, 8, 8, 1), "float32")
    step[:, :, 4:] = 255.0                                 # a vertical edge
    ramp = np.tile(np.arange(8, dtype="float32") * 10, (8, 1))[None, :, :, None]
    signal = {k: sct.encoders.ViewSignal(k) for k in sct.encoders.SIGNALS}
    np.testing.assert_array_equal(signal["image"](step), step)
    edges = signal["gradient"](step).numpy()[0, :, :, 0]
    assert edges[:, [0, 1, 2, 5, 6, 7]].max() < 1e-3       # flat: no gradient
    np.testing.assert_allclose(edges[:, 3:5], 255.0 * 4 / (4 * 2 ** 0.5), rtol=1e-5)
    assert edges.max() <= 255.0
    # A linear ramp has no second derivative inside the image.
    np.testing.assert_allclose(signal["laplacian"](ramp).numpy()[0, :, 1:-1, 0], 0.0, atol=1e-4)
    np.testing.assert_allclose(signal["laplacian"](step).numpy()[0, 2, 3:5, 0], 255.0 / 4)
    with pytest.raises(ValueError, match="Received: kind='colour'"):
        sct.encoders.ViewSignal("colour")


def test_multi_view_encoder_is_one_fresh_backbone_per_signal():
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(3)])
    encoder = sct.encoders.multi_view(backbone, ("image", "laplacian"))
    assert sct.encoders.view_signals(encoder) == ("image", "laplacian")
    assert sct.encoders.view_signals(backbone) == ()
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype("float32")
    copies = [encoder.get_layer(f"{k}_{backbone.name}") for k in ("image", "laplacian")]
    expected = np.concatenate([copies[0](x), copies[1](sct.encoders.ViewSignal("laplacian")(x))],
                              axis=1)
    np.testing.assert_allclose(encoder(x), expected, rtol=1e-6)
    assert not np.array_equal(copies[0].weights[0].numpy(), copies[1].weights[0].numpy())
    for signals in (("image",), ("image", "image"), ("image", "depth")):
        with pytest.raises(ValueError, match="signals"):
            sct.encoders.multi_view(backbone, signals)


def test_model_reads_one_crop_or_one_per_signal():
    backbone = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(4)])
    with pytest.raises(ValueError, match=r"crops='shared' reads 1 crop.*Received: views=2"):
        sct.models.CMCModel(backbone, views=2)
    with pytest.raises(ValueError, match="Received: crops='random'"):
        sct.models.CMCModel(backbone, crops="random")
    for option in ({"imix": "mixup"}, {"adversarial_eps": 0.03}):
        with pytest.raises(ValueError, match="neither i-Mix nor adversarial views"):
            sct.models.CMCModel(backbone, crops="independent", **option)
    model = sct.models.CMCModel(backbone, head=sct.heads.ProjectionHead(6, kind="linear"),
                                signals=("image", "gradient", "laplacian"))
    assert [h.name for h in model.head.heads] == ["image_head", "gradient_head",
                                                  "laplacian_head"]
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype("float32")
    assert tuple(model(x).shape) == (2, 18)               # the signals' embeddings
    assert tuple(model.encoder(x).shape) == (2, 12)       # the features, side by side
    assert tuple(model(x[:, None]).shape) == (2, 3, 6)    # each signal's, for the loss
    with pytest.raises(ValueError, match=r"reads 1 crop.*Received: views.shape"):
        model.forward(tf.zeros((2, 2, 8, 8, 1)), training=False)
    # Independent crops: signal m of crop m through its own backbone.
    model = sct.models.CMCModel(backbone, signals=("image", "gradient"), crops="independent")
    assert model.views == 2
    crops = np.random.default_rng(1).uniform(0, 255, (2, 2, 8, 8, 1)).astype("float32")
    (image, image_net), (gradient, gradient_net) = sct.encoders.signal_branches(model.encoder)
    expected = np.concatenate([image_net(crops[:, 0]), gradient_net(gradient(crops[:, 1]))], 1)
    out = model.forward(tf.constant(crops), training=False)
    np.testing.assert_allclose(out["features"][:, 0], expected, rtol=1e-5)
    assert tuple(out["projections"].shape) == (2, 2, 128)
    loaded = sct.models.CMCModel.from_config(model.get_config())
    assert loaded.crops == "independent" and loaded.views == 2


def test_accuracy_is_cross_view_retrieval():
    backbone = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(4)])
    model = sct.models.CMCModel(backbone)
    a = np.eye(4, 3 * 4, dtype="float32")[:, :4]                      # 4 orthogonal rows
    b = a[[0, 1, 3, 2]]                                                 # 2 and 3 swapped
    model.update_metrics(None, {"projections": tf.constant(np.stack([a, b], 1))})
    assert float(model.contrastive_accuracy_tracker.result()) == pytest.approx(0.5)
