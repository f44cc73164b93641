"""FeatureQueue, the momentum update and MoCoModel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf.memory import FeatureQueue
from supcon_tf.momentum import ema_update, momentum_at, weight_pairs
from tests.reference import moco_reference
from tests.test_models import _images
from tests import tiny

SHAPE = (28, 28, 1)


# -- the queue -----------------------------------------------------------------------

def test_queue_fills_wraps_and_keeps_labels():
    queue = FeatureQueue(size=5, dim=2, with_labels=True)
    assert queue.read()[0].shape == (0, 2)               # nothing filled: nothing read
    slots = [None] * 5
    pointer = 0
    for step in range(4):                                # batches of 2 into 5 slots
        queue.enqueue(np.full((2, 2), step, "float32"), np.full(2, 10 + step))
        for _ in range(2):
            slots[pointer] = step
            pointer = (pointer + 1) % 5
        filled = [s for s in slots if s is not None]
        values, labels = queue.read()
        np.testing.assert_array_equal(values.numpy()[:, 0], filled)
        np.testing.assert_array_equal(labels.numpy(), np.array(filled) + 10)
    assert int(queue.pointer) == 3 and int(queue.count) == 5
    # A batch larger than the queue keeps its last `size` keys, in order.
    queue.enqueue(np.arange(14, dtype="float32").reshape(7, 2), np.arange(7))
    np.testing.assert_array_equal(queue.read()[0].numpy()[:, 0], [4, 6, 8, 10, 12])
    np.testing.assert_array_equal(queue.read()[1].numpy(), [2, 3, 4, 5, 6])


def test_queue_bad_input():
    for size in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="size"):
            FeatureQueue(size=size, dim=4)
    queue = FeatureQueue(size=4, dim=3)
    with pytest.raises(ValueError, match=r"keys.shape=\(2, 5\)"):
        queue.enqueue(np.ones((2, 5), "float32"))
    with pytest.raises(ValueError, match="stores no labels"):
        queue.enqueue(np.ones((2, 3), "float32"), labels=np.zeros(2))
    with pytest.raises(ValueError, match="pass `labels`"):
        FeatureQueue(size=4, dim=3, with_labels=True).enqueue(np.ones((2, 3), "float32"))


def test_queue_saves_and_loads(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.queue = FeatureQueue(4, 3, with_labels=True)
    model.queue.enqueue(np.arange(9, dtype="float32").reshape(3, 3), [1, 2, 3])
    model.save_weights(str(tmp_path / "q.weights.h5"))
    other = keras.Model(inputs, model.layers[-1].output)
    other.queue = FeatureQueue(4, 3, with_labels=True)
    other.load_weights(str(tmp_path / "q.weights.h5"))
    np.testing.assert_array_equal(other.queue.read()[0], model.queue.read()[0])
    assert int(other.queue.pointer) == 3


# -- the momentum update -------------------------------------------------------------

def test_ema_update_and_schedules_against_numpy():
    target = [keras.Variable(np.array([1.0, 2.0], "float32")), keras.Variable(np.float32(-1))]
    online = [keras.Variable(np.array([3.0, 0.0], "float32")), keras.Variable(np.float32(1))]
    ema_update(list(zip(target, online)), 0.9)
    np.testing.assert_allclose(target[0].numpy(), [0.9 * 1 + 0.1 * 3, 0.9 * 2], rtol=1e-6)
    np.testing.assert_allclose(target[1].numpy(), -0.8, rtol=1e-6)
    assert float(momentum_at(50, 100, 0.99, "constant")) == pytest.approx(0.99)
    for step in (0, 25, 50, 100, 150):
        want = 1 - (1 - 0.99) * (np.cos(np.pi * min(step / 100, 1)) + 1) / 2
        assert float(momentum_at(step, 100, 0.99, "cosine")) == pytest.approx(want, abs=1e-6)


# -- the model -----------------------------------------------------------------------

def _moco(**kwargs):
    keras.utils.set_random_seed(0)
    kwargs.setdefault("augmenter", sct.augment.simclr(SHAPE, seed=0))
    kwargs.setdefault("queue_size", 40)
    return sct.models.MoCoModel(tiny.encoder(SHAPE),
                                head=sct.heads.ProjectionHead(16), **kwargs)


def test_moco_fit_reads_queue_before_enqueue_and_updates_the_target():
    x, y = _images(16)
    views = np.stack([x, x[:, :, ::-1]], axis=1)
    model = _moco(augmenter=None, momentum=0.9, bn_groups=1)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    target_before = [t.numpy().copy()
                     for t, _ in weight_pairs(model.target_encoder, model.encoder)]
    online_before = [w.numpy().copy() for w in model.encoder.weights]
    # Step 1 on an empty queue: the query's own key is all there is, so the loss is 0.
    logs = model.fit(views[:8], batch_size=8, epochs=1, verbose=0, shuffle=False).history
    assert logs["loss"][0] == pytest.approx(0.0, abs=1e-6)
    assert int(model.queue.count) == 8 and set(model.queue.read()[1].numpy()) == {-1}
    # The target moved towards the online network: t = 0.9 t + 0.1 o (o after the step).
    for (t, o), t0 in zip(weight_pairs(model.target_encoder, model.encoder), target_before):
        np.testing.assert_allclose(t.numpy(), 0.9 * t0 + 0.1 * o.numpy(), rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(online_before, model.encoder.weights))
    # Step 2: the loss is MoCo's against the 8 keys enqueued by step 1.
    queue = model.queue.read()[0].numpy()
    q = model(views[8:, :1], training=True).numpy()[:, 0]
    k = model.encode(tf.constant(views[8:, 1:]), True, model.target_encoder,
                     model.target_head)[1].numpy()[:, 0]
    want = moco_reference(None, q, k, queue, temperature=0.2).mean()
    result = model.evaluate(views[8:], batch_size=8, verbose=0, return_dict=True)
    # evaluate uses inference-mode BatchNorm: compare with the same.
    q = model(views[8:, :1], training=False).numpy()[:, 0]
    k = model.encode(tf.constant(views[8:, 1:]), False, model.target_encoder,
                     model.target_head)[1].numpy()[:, 0]
    want = moco_reference(None, q, k, queue, temperature=0.2).mean()
    assert result["loss"] == pytest.approx(want, rel=1e-4)
    assert int(model.queue.count) == 8                   # evaluate does not enqueue


def test_shuffle_bn_keys_depend_only_on_their_group():
    """With bn_groups=2 the key of a sample is normalised with the samples of
    its (shuffled) group only: changing a sample of the other group leaves it."""
    x, _ = _images(8)
    views = tf.constant(np.stack([x, x], axis=1)[:, 1:])
    model = _moco(augmenter=None, bn_groups=2)
    model.compile(optimizer="sgd")
    keys, _ = model._keys(views, True)
    order = tf.argsort(tf.random.stateless_uniform(
        [8], seed=tf.stack([tf.cast(model.optimizer.iterations, tf.int32), 17]))).numpy()
    first, second = order[:4], order[4:]
    changed = views.numpy().copy()
    changed[second[0]] = 255 - changed[second[0]]
    keys2, _ = model._keys(tf.constant(changed), True)
    np.testing.assert_allclose(keys2.numpy()[first], keys.numpy()[first], atol=1e-5)
    assert not np.allclose(keys2.numpy()[second[1:]], keys.numpy()[second[1:]], atol=1e-4)
    # and the group's keys are the target networks' on that group alone
    _, alone = model.encode(tf.gather(views, first), True, model.target_encoder,
                            model.target_head)
    np.testing.assert_allclose(keys.numpy()[first], alone.numpy(), atol=1e-5)


def test_moco_bad_input():
    with pytest.raises(ValueError, match="momentum"):
        _moco(momentum=1.5)
    with pytest.raises(ValueError, match="momentum"):
        _moco(momentum=-0.1)
    with pytest.raises(ValueError, match="queue_size=0"):
        _moco(queue_size=0)
    with pytest.raises(ValueError, match="views=3"):
        _moco(views=3)
    with pytest.raises(ValueError, match="momentum_schedule"):
        _moco(momentum_schedule="linear")
    with pytest.raises(ValueError, match="bn_groups"):
        _moco(bn_groups=0)
    model = _moco(momentum_schedule="cosine")
    model.compile(optimizer="sgd")
    ds = tf.data.Dataset.from_tensor_slices(_images(16)[0]).batch(8).repeat()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(ds.filter(lambda image: True), epochs=1, verbose=0)


def test_cosine_momentum_follows_the_planned_steps():
    x, _ = _images(16)
    model = _moco(momentum_schedule="cosine", momentum=0.9)
    model.compile(optimizer="sgd")
    model.fit(x, batch_size=8, epochs=3, verbose=0)
    assert int(model.planned_steps) == 6


def test_two_replicas_equal_one_device_queue_and_weights(strategy):
    """One device with bn_groups=2 is MoCo's shuffle-BN on two devices: the same
    permutation, each device one group. After three steps of fit both hold the
    same queue, key networks and weights."""
    rng = np.random.default_rng(3)
    views = rng.uniform(0, 1, size=(24, 2, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=24).astype("int32")

    def encoder():
        return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                                 keras.layers.BatchNormalization(), keras.layers.ReLU(),
                                 keras.layers.GlobalAveragePooling2D()])

    results = []
    for scope, groups in ((None, 2), (strategy, 1)):
        keras.utils.set_random_seed(0)
        with (scope.scope() if scope else tf.device("/cpu:0")):
            model = sct.models.MoCoModel(encoder(), head=sct.heads.ProjectionHead(
                8, hidden_dims=(8,), batch_norm=False), queue_size=20, momentum=0.5,
                bn_groups=groups)
            model.compile(optimizer=keras.optimizers.SGD(0.1))
            if not results:
                weights = model.get_weights()
            else:
                model.set_weights(weights)
        ds = tf.data.Dataset.from_tensor_slices((views, y)).batch(8, drop_remainder=True)
        history = model.fit(ds, epochs=1, verbose=0).history
        results.append((history, model))
    (h1, one), (h2, two) = results
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-4)
    np.testing.assert_allclose(two.queue.read()[0], one.queue.read()[0], atol=1e-5)
    np.testing.assert_array_equal(two.queue.read()[1], one.queue.read()[1])
    # 24 keys into 20 slots: the third batch wraps around to slots 0-3.
    np.testing.assert_array_equal(one.queue.read()[1],
                                  np.concatenate([y[20:24], y[4:20]]))
    for a, b in zip(two.weights, one.weights):
        if "moving_" in a.path:
            continue      # moving statistics: updated once per group, not per step
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
