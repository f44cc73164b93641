"""ContraGAN's 2C loss, CLIP's loss and its learned scale, GraphCL's loss:
the loop references of their definitions, finite differences, two replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from tests import reference

L = sct.losses
RNG = np.random.default_rng(3)
LABELS = np.array([0, 1, 0, 2, 1, 0, 2, 2])
E = RNG.normal(size=(8, 6)).astype("float32")
P = RNG.normal(size=(8, 6)).astype("float32")
PAIRS = RNG.normal(size=(8, 2, 6)).astype("float32")


@pytest.mark.parametrize("temperature", [1.0, 0.1])
def test_2c_loss_equals_the_loop_reference(temperature):
    got = L.conditional_contrastive_loss(LABELS, E, P, temperature).numpy()
    np.testing.assert_allclose(
        got, reference.conditional_contrastive_reference(LABELS, E, P, temperature), rtol=1e-5)
    # A sample alone in its class: the proxy is its only positive.
    alone = np.array([0, 1, 1, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(
        L.conditional_contrastive_loss(alone, E, P, temperature).numpy(),
        reference.conditional_contrastive_reference(alone, E, P, temperature), rtol=1e-5)


@pytest.mark.parametrize("labels", [None, LABELS])
def test_clip_loss_equals_the_loop_reference(labels):
    got = L.clip_loss(labels, PAIRS, 1 / 0.07).numpy()
    np.testing.assert_allclose(
        got, reference.clip_reference(PAIRS[:, 0], PAIRS[:, 1], 1 / 0.07, labels), rtol=1e-5)


@pytest.mark.parametrize("symmetric", [False, True])
def test_graphcl_loss_equals_the_loop_reference(symmetric):
    got = L.graphcl_loss(PAIRS, 0.2, symmetric).numpy()
    np.testing.assert_allclose(got, reference.graphcl_reference(PAIRS, 0.2, symmetric), rtol=1e-5)
    assert float(L.GraphCLLoss()(None, PAIRS[:1])) == 0.0      # no other graph


def test_gradients_equal_finite_differences():
    def fd_check(fn, x, ref):
        x = tf.constant(x, tf.float64)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_sum(fn(tf.cast(x, tf.float32)))
        grad = tape.gradient(value, x).numpy()
        np.testing.assert_allclose(grad, reference.finite_differences(ref, x.numpy()),
                                   rtol=2e-3, atol=2e-4)

    fd_check(lambda e: L.conditional_contrastive_loss(LABELS, e, P, 0.5), E,
             lambda e: reference.conditional_contrastive_reference(LABELS, e, P, 0.5).sum())
    fd_check(lambda z: L.clip_loss(LABELS, z, 3.0), PAIRS,
             lambda z: reference.clip_reference(z[:, 0], z[:, 1], 3.0, LABELS).sum())
    fd_check(lambda z: L.graphcl_loss(z, 0.5, True), PAIRS,
             lambda z: reference.graphcl_reference(z, 0.5, True).sum())
    # The scale's own gradient.
    s = tf.Variable(3.0)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(L.clip_loss(None, PAIRS, s))
    numeric = (reference.clip_reference(PAIRS[:, 0], PAIRS[:, 1], 3.0 + 1e-4).sum()
               - reference.clip_reference(PAIRS[:, 0], PAIRS[:, 1], 3.0 - 1e-4).sum()) / 2e-4
    np.testing.assert_allclose(tape.gradient(value, s).numpy(), numeric, rtol=1e-3)


def test_two_replicas_equal_one_device(strategy):
    """Each replica's samples against the global batch: the per-sample values
    and the gradients of the mean are those of one device."""
    e, p, pairs = tf.Variable(E), tf.Variable(P), tf.Variable(PAIRS)

    def losses():
        return (L.conditional_contrastive_loss(LABELS, e, p, 0.5),
                L.clip_loss(LABELS, pairs, 4.0), L.graphcl_loss(pairs, 0.3, True))

    with tf.GradientTape() as tape:
        one = losses()
        total = sum(tf.reduce_mean(v) for v in one)
    want = tape.gradient(total, [e, p, pairs])

    with strategy.scope():
        ev, pv, pairsv = tf.Variable(E), tf.Variable(P), tf.Variable(PAIRS)

    def step(ids):
        with tf.GradientTape() as tape:
            rows = tf.gather(ev, ids), tf.gather(pv, ids), tf.gather(pairsv, ids)
            labels = tf.gather(LABELS, ids)
            two = (L.conditional_contrastive_loss(labels, rows[0], rows[1], 0.5),
                   L.clip_loss(labels, rows[2], 4.0), L.graphcl_loss(rows[2], 0.3, True))
            total = sum(tf.reduce_sum(v) for v in two) / len(LABELS)
        grads = tape.gradient(total, [ev, pv, pairsv])
        return two, grads

    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.range(8).batch(8).map(lambda i: tf.cast(i, tf.int32)))
    values, grads = strategy.run(tf.function(step), args=(next(iter(dataset)),))
    for k in range(3):
        got = np.concatenate([v.numpy() for v in strategy.experimental_local_results(values[k])])
        np.testing.assert_allclose(got, one[k].numpy(), rtol=1e-5, atol=1e-6)
    for g, w in zip(grads, want):
        summed = strategy.reduce("SUM", g, axis=None)
        np.testing.assert_allclose(tf.convert_to_tensor(summed).numpy(), w.numpy(),
                                   rtol=1e-4, atol=1e-6)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="needs class ids"):
        L.conditional_contrastive_loss(None, E, P)
    with pytest.raises(ValueError, match=r"proxies.shape=\(8, 5\)"):
        L.conditional_contrastive_loss(LABELS, E, P[:, :5])
    with pytest.raises(ValueError, match="`proxies=`"):
        L.ConditionalContrastiveLoss()(LABELS, E)
    with pytest.raises(ValueError, match=r"\[batch, 2, dim\].*\(8, 6\)"):
        L.clip_loss(None, E, 1.0)
    with pytest.raises(ValueError, match="`logit_scale=`"):
        L.CLIPLoss()(None, PAIRS)
    with pytest.raises(ValueError, match="1 <= initial <= maximum"):
        sct.heads.LogitScale(initial=200.0)
    with pytest.raises(ValueError, match="temperature"):
        L.ConditionalContrastiveLoss(temperature=0)


def test_logit_scale_learns_is_clamped_and_round_trips(tmp_path):
    """A model of two towers and a LogitScale trained with CLIPLoss: the
    scale is a trained weight, clamped at its maximum after each step, and
    saved with the model."""
    keras.utils.set_random_seed(0)
    a_in, b_in = keras.Input((6,)), keras.Input((6,))
    tower = keras.layers.Dense(4)           # one tower: matched pairs align, so the
    a, b = tower(a_in), tower(b_in)         # loss falls as the scale rises
    scale_layer = sct.heads.LogitScale(initial=10.0, maximum=12.0)
    scale = scale_layer(a)
    model = keras.Model([a_in, b_in], [keras.ops.stack([a, b], axis=1), scale])
    optimizer = keras.optimizers.SGD(5.0)
    loss = L.CLIPLoss()
    for _ in range(3):
        with tf.GradientTape() as tape:
            pairs, s = model([PAIRS[:, 0], PAIRS[:, 0] + 0.05 * PAIRS[:, 1]])
            value = loss(None, pairs, logit_scale=s)
        grads = tape.gradient(value, model.trainable_weights)
        optimizer.apply_gradients(zip(grads, model.trainable_weights))
    assert float(scale_layer(None)) == pytest.approx(12.0, rel=1e-6)   # pushed up, clamped
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict([E, E], verbose=0)[1], 12.0, rtol=1e-6)
    assert any(layer.get_config().get("maximum") == 12.0 for layer in again.layers)
