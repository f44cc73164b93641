"""MiCE: the negative ELBO against a loop translation of the official code
(values, posterior, gradients), the gate's simplex prototypes, and the
model's analytic prototype update and clustering. (The family's contract
test covers fit, save/load, resume and two replicas.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf.losses.mice import mice_log_terms, mice_posterior
from tests import reference

RNG = np.random.default_rng(11)
B, K, D, Q = 4, 3, 5, 6


def _inputs():
    return {"f": RNG.normal(size=(B, K, D)), "v": RNG.normal(size=(B, K, D)),
            "g": RNG.normal(size=(B, D)), "omega": sct.losses.simplex_prototypes(K, D),
            "mu": RNG.normal(size=(K, D)), "queue": RNG.normal(size=(Q, K, D))}


def _loss(x, temperature=0.5, kappa=0.7):
    return sct.losses.mice_loss(x["f"], x["v"], x["g"], x["omega"], x["mu"], x["queue"],
                                temperature, kappa)


def test_loss_and_posterior_match_the_official_code():
    x = {k: v.astype("float32") for k, v in _inputs().items()}
    want, want_post = reference.mice_reference(x["f"], x["v"], x["g"], x["omega"], x["mu"],
                                               x["queue"], 0.5, 0.7)
    np.testing.assert_allclose(_loss(x), want, rtol=1e-5, atol=1e-5)
    log_pi, log_phi = mice_log_terms(x["f"], x["v"], x["g"], x["omega"], x["mu"], x["queue"],
                                     0.5, 0.7)
    np.testing.assert_allclose(mice_posterior(log_pi, log_phi), want_post, atol=1e-5)
    # An empty queue: each expert's positive is certain, the loss 0.
    np.testing.assert_allclose(sct.losses.mice_loss(
        x["f"], x["v"], x["g"], x["omega"], x["mu"], x["queue"][:0]), 0.0, atol=1e-6)


@pytest.mark.parametrize("wrt", ["f", "g", "mu"])
def test_gradients_match_the_official_code_which_differentiates_the_posterior(wrt):
    """The official loss differentiates through the posterior q; at the exact
    posterior that part cancels, so the gradient of -logsumexp equals it."""
    x = _inputs()
    t = tf.constant(x[wrt], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(t)
        total = tf.reduce_sum(_loss({**{k: v.astype("float32") for k, v in x.items()},
                                     wrt: t}))
    grad = tape.gradient(total, t).numpy()
    numeric = np.zeros_like(x[wrt])
    for idx in np.ndindex(*x[wrt].shape):
        up, down = dict(x), dict(x)
        up[wrt], down[wrt] = x[wrt].copy(), x[wrt].copy()
        up[wrt][idx] += 1e-6
        down[wrt][idx] -= 1e-6
        numeric[idx] = (reference.mice_reference(up["f"], up["v"], up["g"], up["omega"], up["mu"],
                                                 up["queue"], 0.5, 0.7)[0].sum()
                        - reference.mice_reference(down["f"], down["v"], down["g"],
                                                   down["omega"], down["mu"], down["queue"],
                                                   0.5, 0.7)[0].sum()) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=2e-4)


def test_simplex_prototypes_and_argument_checks():
    for k, d in ((2, 1), (10, 128), (5, 4)):
        p = sct.losses.simplex_prototypes(k, d)
        gram = p @ p.T
        np.testing.assert_allclose(np.diag(gram), 1.0, atol=1e-6)
        np.testing.assert_allclose(gram[~np.eye(k, dtype=bool)], -1.0 / (k - 1), atol=1e-6)
    with pytest.raises(ValueError, match="dim"):
        sct.losses.simplex_prototypes(10, 8)
    x = {k: v.astype("float32") for k, v in _inputs().items()}
    with pytest.raises(ValueError, match="queue"):
        sct.losses.mice_loss(x["f"], x["v"], x["g"], x["omega"], x["mu"], x["queue"][:, :2])
    with pytest.raises(ValueError, match="gating"):
        sct.losses.MiCELoss()(None, x["f"], keys=x["v"])
    with pytest.raises(ValueError, match="kappa"):
        sct.losses.MiCELoss(kappa=0.0)


def _model(**kwargs):
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255),
                                keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                                keras.layers.Flatten(), keras.layers.Dense(8)])
    model = sct.models.MiCEModel(encoder, num_experts=3, head=sct.heads.MixtureHead(3, 4),
                                 augmenter=sct.augment.simclr((28, 28, 1), seed=0),
                                 queue_size=32, bn_groups=1, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return model


def test_prototypes_follow_the_keys_each_expert_won_and_images_cluster():
    images, _ = next(iter(sct.data.load("fashion_mnist", "train[:64]").batch(64)))
    model = _model()
    history = model.fit(tf.data.Dataset.from_tensor_slices(images).batch(16), epochs=2,
                        verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and len(history["expert_share"]) == 2
    assert 1 / 3 <= history["expert_share"][-1] <= 1.0
    # fit ends with the M-step: the sums are consumed, and the prototypes of
    # the experts that won images are unit vectors (the others keep their
    # trained values; the loss normalises them).
    assert not np.any(model.center_sums.numpy())
    assert np.isclose(np.linalg.norm(model.expert_prototypes.numpy(), axis=1), 1.0,
                      atol=1e-5).any()
    # The update itself: the normalised sum per expert; an expert that won nothing keeps mu.
    sums = np.zeros((3, 4), np.float32)
    sums[0], sums[2] = [3.0, 0.0, 4.0, 0.0], [0.0, 0.0, 0.0, 2.0]
    before = model.expert_prototypes.numpy().copy()
    model.center_sums.assign(sums)
    model.update_prototypes()
    np.testing.assert_allclose(model.expert_prototypes.numpy(),
                               [[0.6, 0.0, 0.8, 0.0], before[1], [0.0, 0.0, 0.0, 1.0]], atol=1e-6)
    posterior, gate = model.cluster(images.numpy())
    assert posterior.shape == gate.shape == (64,)
    assert set(posterior.tolist()) <= {0, 1, 2} and set(gate.tolist()) <= {0, 1, 2}
    # The gate's clusters from the head's output alone (what an export serves).
    projection = model.head(model.encoder(images, training=False)).numpy()
    np.testing.assert_array_equal(sct.clustering.mice_gate_clusters(projection, 3), gate)
    with pytest.raises(ValueError, match="projection"):
        sct.clustering.mice_gate_clusters(projection[:, :-1], 3)
    with pytest.raises(ValueError, match="num_experts"):
        sct.clustering.mice_gate_clusters(projection, 1)


def test_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match="views=3"):
        _model(views=2)
    with pytest.raises(ValueError, match="mochi_n"):
        _model(mochi_n=8)
    with pytest.raises(ValueError, match="MixtureHead"):
        sct.models.MiCEModel(keras.Sequential([keras.layers.Dense(4)]), num_experts=4,
                             head=sct.heads.MixtureHead(3, 4))
    with pytest.raises(ValueError, match="MiCELoss"):
        _model().compile(optimizer="sgd", loss=sct.losses.MoCoLoss())
