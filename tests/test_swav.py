"""SwAV: the swapped prediction loss against a loop reference, the model's
codes (batch and queue) against SwAV's Sinkhorn transcribed, two replicas
against one device, frozen prototypes, multi-crop, saving and resuming."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf.losses import SwAVLoss, swav_loss
from tests.reference import finite_differences, sinkhorn_reference, swav_reference
from tests.resume import killed_then_resumed


def _encoder(size=8):
    return keras.Sequential([keras.Input((size, size, 1)), keras.layers.Rescaling(1 / 255),
                             keras.layers.Conv2D(4, 3, activation="relu"),
                             keras.layers.GlobalAveragePooling2D()])


def _views(n=16, size=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    base = rng.integers(0, 256, size=(4, size, size, 1))
    views = base[labels][:, None] + rng.integers(-40, 40, size=(n, 2, size, size, 1))
    return np.clip(views, 0, 255).astype("float32"), labels


def _model(**kwargs):
    options = dict(head=sct.heads.ProjectionHead(6, kind="linear"), num_prototypes=5,
                   freeze_prototypes_steps=0, prototype_seed=0)
    options.update(kwargs)
    return sct.models.SwAVModel(_encoder(), **options)


def test_swav_loss_matches_a_loop_reference_a_hand_case_and_finite_differences():
    rng = np.random.default_rng(0)
    scores = rng.uniform(-1, 1, size=(6, 4, 5)).astype("float32")          # 2 large + 2 small
    codes = rng.dirichlet(np.ones(5), size=(6, 2)).astype("float32")
    np.testing.assert_allclose(swav_loss(codes, scores, 0.1).numpy(),
                               swav_reference(codes, scores, 0.1), rtol=1e-5)
    np.testing.assert_allclose(swav_loss(codes, scores[:, :2], 0.5).numpy(),
                               swav_reference(codes, scores[:, :2], 0.5), rtol=1e-5)
    # Uniform codes and flat scores: log K for every sample.
    assert float(SwAVLoss()(np.full((3, 2, 4), 0.25), np.zeros((3, 2, 4)))) == \
        pytest.approx(np.log(4), rel=1e-6)
    # A one-hot code predicted with certainty costs nothing.
    sharp = np.zeros((1, 2, 3), "float32")
    sharp[0, :, 1] = 1.0
    assert float(SwAVLoss(temperature=0.01)(sharp, sharp)) == pytest.approx(0.0, abs=1e-6)
    # Gradients with respect to the scores (the codes get none).
    weights = rng.uniform(0.5, 1.5, size=6)
    s = tf.constant(scores.astype("float64"))
    with tf.GradientTape() as tape:
        tape.watch(s)
        value = tf.reduce_sum(swav_loss(codes, s, 0.1) * weights)
    numeric = finite_differences(lambda z: np.sum(swav_reference(codes, z, 0.1) * weights),
                                 scores)
    np.testing.assert_allclose(tape.gradient(value, s).numpy(), numeric, rtol=1e-3, atol=1e-5)
    # Keras reduction with sample weights.
    assert float(SwAVLoss()(codes, scores, sample_weight=weights)) == pytest.approx(
        np.mean(swav_reference(codes, scores) * weights), rel=1e-5)


def test_swav_loss_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        SwAVLoss(temperature=0)
    with pytest.raises(ValueError, match="V >= 2"):
        swav_loss(np.ones((2, 1, 3)), np.ones((2, 1, 3)))
    with pytest.raises(ValueError, match="1 <= A <= V"):
        swav_loss(np.ones((2, 3, 3)), np.ones((2, 2, 3)))
    with pytest.raises(ValueError, match="same number of prototypes"):
        swav_loss(np.ones((2, 2, 3)), np.ones((2, 2, 4)))
    with pytest.raises(ValueError, match=r"\[batch, A, K\]"):
        swav_loss(np.ones((2, 3)), np.ones((2, 2, 3)))


def _reference_loss(model, out, queues=None, temperature=0.1, epsilon=0.05):
    scores = out["scores"].numpy().astype(np.float64)
    kernel = model.prototypes.unit_kernel().numpy().astype(np.float64)
    codes = []
    for view in range(2):
        rows = scores[:, view]
        if queues is not None:
            rows = np.concatenate([queues[view] @ kernel, rows])
        codes.append(sinkhorn_reference(rows, epsilon=epsilon)[-len(scores):])
    return np.mean(swav_reference(np.stack(codes, axis=1), scores, temperature))


def test_codes_come_from_the_batch_then_from_queue_and_batch():
    views, _ = _views(8)
    model = _model(queue_size=8, temperature=0.2, epsilon=0.1)
    model.compile(optimizer="sgd")
    model.optimizer.build(model.trainable_variables)
    out = model.forward(tf.constant(views), training=True)
    # Empty queue: the batch alone.
    loss = float(model.contrastive_loss(views, None, dict(out), None, True))
    assert loss == pytest.approx(_reference_loss(model, out, None, 0.2, 0.1), rel=1e-5)
    # A full queue joins the Sinkhorn step (scored with the current prototypes).
    rng = np.random.default_rng(3)
    queued = [rng.normal(size=(8, 6)) for _ in range(2)]
    queued = [q / np.linalg.norm(q, axis=1, keepdims=True) for q in queued]
    for queue, values in zip(model.queues, queued):
        queue.enqueue(tf.constant(values, tf.float32))
    loss = float(model.contrastive_loss(views, None, dict(out), None, True))
    assert loss == pytest.approx(_reference_loss(model, out, queued, 0.2, 0.1), rel=1e-5)
    # Before the start step the queue is not used.
    model.queue_start_step.assign(5)
    loss = float(model.contrastive_loss(views, None, dict(out), None, True))
    assert loss == pytest.approx(_reference_loss(model, out, None, 0.2, 0.1), rel=1e-5)


def test_prototypes_stay_frozen_then_learn_and_keep_unit_norm():
    views, _ = _views(16)
    model = _model(freeze_prototypes_steps=2)
    model.compile(optimizer=keras.optimizers.AdamW(0.05))
    start = model.prototypes.kernel.numpy().copy()
    np.testing.assert_allclose(np.linalg.norm(start, axis=0), 1.0, rtol=1e-6)
    encoder_start = model.encoder.get_weights()[0].copy()
    model.fit(views, batch_size=8, epochs=1, verbose=0)                      # 2 steps
    np.testing.assert_allclose(model.prototypes.kernel.numpy(), start, atol=1e-6)
    assert not np.allclose(model.encoder.get_weights()[0], encoder_start)
    model.fit(views, batch_size=8, epochs=1, verbose=0)                      # 2 more
    kernel = model.prototypes.kernel.numpy()
    assert np.abs(kernel - start).max() > 1e-3
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-5)


def test_multi_crop_trains_saves_and_resumes_after_kill(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(32, 12, 12, 1)).astype("float32")
    labels = rng.integers(0, 4, size=32)
    backup = str(tmp_path / "backup")

    def model():
        keras.utils.set_random_seed(0)
        m = sct.models.SwAVModel(
            _encoder(None), head=sct.heads.ProjectionHead(6, hidden_dims=(8,)),
            augmenter=sct.augment.RandomResizedCrop(10, 10, scale=(0.5, 1.0), seed=0),
            small_augmenter=sct.augment.RandomResizedCrop(5, 5, scale=(0.1, 0.3), seed=1),
            small_views=2, num_prototypes=5, queue_size=16, freeze_prototypes_steps=1,
            probe_classes=4, prototype_seed=0)
        m.compile(optimizer="adam")
        return m

    resumed, history = killed_then_resumed(model, images, backup, y=labels, batch_size=8)
    assert int(resumed.queues[0].count.numpy()) == 16
    assert set(history) == {"loss", "contrastive_accuracy", "output_std", "code_entropy",
                            "probe_loss", "probe_accuracy"}
    assert all(np.isfinite(history["loss"]))
    assert 0 < history["code_entropy"][-1] <= np.log(5) + 1e-5
    path = str(tmp_path / "swav.keras")
    resumed.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is sct.models.SwAVModel and loaded.small_views == 2
    for a, b in zip(loaded.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    loaded.fit(images, batch_size=8, epochs=1, verbose=0)              # trains on, no labels


def test_swav_bad_input():
    with pytest.raises(ValueError, match="views=3"):
        _model(views=3)
    with pytest.raises(ValueError, match="num_prototypes"):
        _model(num_prototypes=1)
    for name in ("temperature", "epsilon"):
        with pytest.raises(ValueError, match=name):
            _model(**{name: 0.0})
    with pytest.raises(ValueError, match="sinkhorn_iterations"):
        _model(sinkhorn_iterations=0)
    with pytest.raises(ValueError, match="queue_size"):
        _model(queue_size=-1)
    with pytest.raises(ValueError, match="freeze_prototypes_steps"):
        _model(freeze_prototypes_steps=-2)
    with pytest.raises(ValueError, match="small_augmenter"):
        _model(small_views=2)
    with pytest.raises(ValueError, match="compile it with a SwAVLoss"):
        _model().compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="i-Mix"):
        _model(imix="mixup")
    model = _model(queue_size=8, queue_start_epoch=2)
    model.compile(optimizer="adam")
    views, _ = _views(8)
    with pytest.raises(ValueError, match="steps per epoch"):
        model.fit(tf.data.Dataset.from_tensor_slices(views).batch(4).repeat(), epochs=1,
                  steps_per_epoch=None, verbose=0)


def test_loss_and_prototypes_configs_round_trip():
    loss = SwAVLoss(temperature=0.2)
    assert SwAVLoss.from_config(loss.get_config()).temperature == 0.2
    layer = sct.memory.Prototypes(7, seed=3)
    scores = layer(tf.ones((2, 3, 4)))
    assert scores.shape == (2, 3, 7)
    np.testing.assert_allclose(np.linalg.norm(layer.kernel.numpy(), axis=0), 1.0, rtol=1e-6)
    again = sct.memory.Prototypes.from_config(layer.get_config())
    assert (again.num_prototypes, again.seed) == (7, 3)
    with pytest.raises(ValueError, match="num_prototypes"):
        sct.memory.Prototypes(1)
    with pytest.raises(ValueError, match="input_shape"):
        sct.encoders.resnet18((None, None, None))
