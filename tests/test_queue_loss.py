"""The loss with an extra contrast set (a queue), and MoCo's loss: against the
loop references of tests/reference.py, between the fused and masked paths,
and across two replicas."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.losses import MoCoLoss, SupConLoss, moco_loss, supcon_loss
from tests.reference import moco_reference, supcon_reference
from tests.test_distribute import replicated, single_device

B, V, D, K = 6, 2, 5, 7


def _data(kind, seed=0, batch=B, views=V, k=K):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(batch, views, D)).astype("float32")
    queue = rng.normal(size=(k, D)).astype("float32")
    if kind == "none":
        return None, z, queue, None
    ids = rng.integers(0, 3, size=batch)
    queue_ids = rng.integers(0, 4, size=k)          # class 3 only in the queue
    if kind == "ids":
        return ids.astype("int32"), z, queue, queue_ids.astype("int32")
    return (np.eye(4, dtype="float32")[ids], z, queue, np.eye(4, dtype="float32")[queue_ids])


OPTIONS = [dict(), dict(variant="in"), dict(contrast_mode="one"),
           dict(denominator="one_positive"), dict(denominator="only_negatives"),
           dict(positives_cap=1), dict(positives_cap=3), dict(temperature=0.5,
                                                               base_temperature=0.07)]


@pytest.mark.parametrize("kind,options", list(itertools.product(
    ["ids", "multi_hot", "none"], OPTIONS)))
def test_queue_matches_loop_reference(kind, options):
    y, z, queue, queue_y = _data(kind, seed=len(str(options)))
    want = supcon_reference(y, z, queue=queue, queue_labels=queue_y, **options)
    for fused in (True, False):
        got = supcon_loss(y, z, queue=queue, queue_labels=queue_y, fused=fused, **options)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"fused={fused}")
    # The queue matters: without it the loss is another.
    assert not np.allclose(supcon_reference(y, z, **options), want)


def test_queue_by_hand():
    # One sample, two identical views e; the queue holds -e (a negative).
    e = np.array([1.0, 0.0], "float32")
    z = np.stack([[e, e]])
    loss = supcon_loss(None, z, queue=-e[None], temperature=1.0).numpy()
    want = -np.log(np.e / (np.e + np.exp(-1.0)))
    np.testing.assert_allclose(loss, [want], rtol=1e-6)
    # Labelled, the same entry of the anchor's class is a second positive.
    loss = supcon_loss(np.array([4]), z, queue=-e[None], queue_labels=np.array([4]),
                       temperature=1.0).numpy()
    log_den = np.log(np.e + np.exp(-1.0))
    np.testing.assert_allclose(loss, [-((1 - log_den) + (-1 - log_den)) / 2], rtol=1e-6)


@pytest.mark.parametrize("kind", ["ids", "none"])
def test_queue_gradients_fused_equal_masked_and_none_into_queue(kind):
    y, z, queue, queue_y = _data(kind, seed=3)
    z, queue = tf.constant(z), tf.constant(queue)
    grads, values = [], []
    for options in (dict(fused=False), dict(), dict(block_size=3), dict(block_size=1)):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([z, queue])
            value = tf.reduce_sum(supcon_loss(y, z, queue=queue, queue_labels=queue_y,
                                              **options))
        grads.append(tape.gradient(value, z).numpy())
        values.append(float(value))
        assert tape.gradient(value, queue) is None
    for got, got_value in zip(grads[1:], values[1:]):
        np.testing.assert_allclose(got, grads[0], rtol=1e-5, atol=1e-6)
        assert got_value == pytest.approx(values[0], rel=1e-5)
    assert np.abs(grads[0]).max() > 1e-3


def test_queue_finite_differences():
    """Against central differences of the float64 loop reference (the loss's
    own float32 values are too coarse for differences at 1e-3)."""
    y, z, queue, queue_y = _data("ids", seed=4)
    x = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(supcon_loss(y, x, queue=queue, queue_labels=queue_y,
                                          variant="in"))
    grad = tape.gradient(value, x).numpy()
    reference = lambda a: supcon_reference(y, a, queue=queue, queue_labels=queue_y,
                                           variant="in").sum()
    numeric = np.zeros(z.shape)
    for idx in np.ndindex(z.shape):
        up, down = z.astype(np.float64), z.astype(np.float64)
        up[idx] += 1e-6
        down[idx] -= 1e-6
        numeric[idx] = (reference(up) - reference(down)) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-5)
    assert np.abs(numeric).max() > 0.1


def test_keras_loss_with_queue_and_self_supervised_ids():
    y, z, queue, queue_y = _data("ids", seed=5)
    np.testing.assert_allclose(
        SupConLoss()(y, z, queue=queue, queue_labels=queue_y),
        supcon_reference(y, z, queue=queue, queue_labels=queue_y).mean(), rtol=1e-5)
    # Unlabelled: the queue's entries are negatives, never a sample's class.
    np.testing.assert_allclose(SupConLoss()(None, z, queue=queue),
                               supcon_reference(None, z, queue=queue).mean(), rtol=1e-5)


def test_queue_bad_input():
    y, z, queue, queue_y = _data("ids")
    with pytest.raises(ValueError, match="queue_labels"):
        supcon_loss(y, z, queue=queue)
    with pytest.raises(ValueError, match="without labels"):
        supcon_loss(None, z, queue=queue, queue_labels=queue_y)
    with pytest.raises(ValueError, match="without labels"):
        SupConLoss()(None, z, queue=queue, queue_labels=queue_y)
    with pytest.raises(ValueError, match=r"queue.shape=\(7, 3\)"):
        supcon_loss(y, z, queue=queue[:, :3], queue_labels=queue_y)
    with pytest.raises(ValueError, match="mask"):
        supcon_loss(None, z, mask=np.eye(B), queue=queue)
    with pytest.raises(ValueError, match="needs a `queue`"):
        supcon_loss(y, z, queue_labels=queue_y)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="queue_labels"):
        supcon_loss(y, z, queue=queue, queue_labels=queue_y[:3])


# -- MoCo's loss ----------------------------------------------------------------

@pytest.mark.parametrize("labelled,k", [(False, K), (True, K), (False, 0), (True, 0)])
def test_moco_loss_matches_pseudo_code(labelled, k):
    rng = np.random.default_rng(k + labelled)
    qk = rng.normal(size=(B, 2, D)).astype("float32")
    queue = rng.normal(size=(k, D)).astype("float32")
    y = rng.integers(0, 3, size=B) if labelled else None
    queue_y = rng.integers(0, 3, size=k) if labelled else None
    want = moco_reference(y, qk[:, 0], qk[:, 1], queue, queue_y, temperature=0.2)
    got = moco_loss(y, qk, queue, queue_y, temperature=0.2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if k == 0 and not labelled:
        np.testing.assert_allclose(got, 0.0, atol=1e-6)   # nothing to tell apart
    np.testing.assert_allclose(MoCoLoss(temperature=0.2)(y, qk, queue=queue, queue_labels=queue_y),
                               want.mean(), rtol=1e-5, atol=1e-6)


def test_moco_loss_gradient_flows_only_into_queries():
    rng = np.random.default_rng(1)
    qk = tf.constant(rng.normal(size=(B, 2, D)).astype("float32"))
    queue = tf.constant(rng.normal(size=(K, D)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([qk, queue])
        value = tf.reduce_sum(moco_loss(None, qk, queue))
    grad = tape.gradient(value, qk).numpy()
    assert np.abs(grad[:, 0]).max() > 1e-3 and np.abs(grad[:, 1]).max() == 0
    assert tape.gradient(value, queue) is None


def test_moco_loss_bad_input():
    qk = np.ones((B, 3, D), "float32")
    with pytest.raises(ValueError, match=r"\[batch, 2, dim\]"):
        moco_loss(None, qk)
    with pytest.raises(ValueError, match="temperature"):
        MoCoLoss(temperature=0)
    with pytest.raises(ValueError, match="class ids"):
        moco_loss(np.eye(B), np.ones((B, 2, D), "float32"))


def test_nan_in_queue_gives_nan():
    y, z, queue, queue_y = _data("ids")
    queue[2, 1] = np.nan
    assert np.isnan(supcon_loss(y, z, queue=queue, queue_labels=queue_y)).all()
    assert np.isnan(moco_loss(None, z, queue)).all()


# -- across replicas ------------------------------------------------------------

@pytest.mark.parametrize("kind,options", [("ids", {}), ("none", {}), ("ids", {"variant": "in"}),
                                          ("ids", {"positives_cap": 2})])
def test_queue_loss_two_replicas_equal_one_device(strategy, kind, options):
    y, z, queue, queue_y = _data(kind, seed=9, batch=8)
    loss = SupConLoss(temperature=0.2, **options)

    class WithQueue:
        def __call__(self, y_true, y_pred):
            return loss(y_true, y_pred, queue=queue, queue_labels=None if y_true is None else queue_y)

    want, want_grad = single_device(WithQueue(), y, z)
    values, grads = replicated(strategy, WithQueue(), y, z)
    np.testing.assert_allclose(sum(values), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, want_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("labelled", [False, True])
def test_moco_loss_two_replicas_equal_one_device(strategy, labelled):
    rng = np.random.default_rng(2)
    qk = rng.normal(size=(8, 2, D)).astype("float32")
    queue = rng.normal(size=(K, D)).astype("float32")
    y = rng.integers(0, 3, size=8).astype("int32") if labelled else None
    queue_y = rng.integers(0, 3, size=K).astype("int32") if labelled else None
    loss = MoCoLoss()
    fn = lambda y_true, y_pred: loss(y_true, y_pred, queue=queue, queue_labels=queue_y)
    want, want_grad = single_device(fn, y, qk)
    values, grads = replicated(strategy, fn, y, qk)
    np.testing.assert_allclose(sum(values), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, want_grad, rtol=1e-5, atol=1e-6)
