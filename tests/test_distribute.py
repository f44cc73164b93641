"""The cross-replica contract, on the CPU split into two logical devices
(tests/conftest.py): per-replica SupConLoss values sum to the single-device
loss of the global batch, and per-replica gradients are the slices of the
single-device gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf.losses import SupConLoss

REPLICAS = 2
LOCAL = 4
VIEWS = 2
DIM = 8


def split(strategy, array):
    """A per-replica value: replica r holds rows [r * n, (r + 1) * n)."""
    parts = np.split(np.asarray(array), strategy.num_replicas_in_sync)
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(parts[ctx.replica_id_in_sync_group]))


def labels(kind, rng, batch):
    if kind == "none":
        return None
    ids = rng.integers(0, 3, size=batch)
    if kind == "ids":
        return ids.astype("int32")
    if kind == "column":
        return ids.reshape(-1, 1).astype("int32")
    if kind == "one_hot":
        return np.eye(3, dtype="float32")[ids]
    hot = (rng.random((batch, 4)) < 0.4).astype("float32")
    hot[0] = 0  # a sample with no label at all
    return hot


def single_device(loss, y, z):
    z = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = loss(y, z)
    return value.numpy(), tape.gradient(value, z).numpy()


def replicated(strategy, loss, y, z):
    @tf.function
    def step(z, y=None):
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = loss(y, z)
        return value, tape.gradient(value, z)

    args = (split(strategy, z),) if y is None else (split(strategy, z), split(strategy, y))
    values, grads = strategy.run(step, args=args)
    values = [v.numpy() for v in strategy.experimental_local_results(values)]
    grads = np.concatenate([g.numpy() for g in strategy.experimental_local_results(grads)])
    return values, grads


# Each option (contrast_mode, variant, denominator, positives_cap) with two
# kinds of labels and each kind with two or three options (every pair traces
# its own replicated step, most of its time): the gathered labels of every
# kind, and every option over the global batch.
CASES = [(kind, options) for options, kinds in [
    (("all", "out", "all", None), ("ids", "none")),
    (("one", "out", "all", None), ("column", "multi_hot")),
    (("all", "in", "all", None), ("one_hot", "none")),
    (("all", "out", "one_positive", None), ("ids", "multi_hot")),
    (("all", "out", "only_negatives", None), ("column", "one_hot")),
    (("all", "out", "all", 1), ("ids", "multi_hot"))] for kind in kinds]


@pytest.mark.parametrize("kind,options", CASES)
def test_sum_over_replicas_equals_global_loss(strategy, kind, options):
    contrast_mode, variant, denominator, cap = options
    rng = np.random.default_rng(len(kind) * 7 + len(str(options)))
    batch = REPLICAS * LOCAL
    z = rng.normal(size=(batch, VIEWS, DIM)).astype("float32")
    y = labels(kind, rng, batch)
    loss = SupConLoss(temperature=0.2, contrast_mode=contrast_mode, variant=variant,
                      denominator=denominator, positives_cap=cap)
    want, want_grad = single_device(loss, y, z)
    values, grads = replicated(strategy, loss, y, z)
    np.testing.assert_allclose(sum(values), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, want_grad, rtol=1e-5, atol=1e-6)
    # The gradient is not trivially zero, and each replica's value is partial.
    assert np.abs(want_grad).max() > 1e-3
    assert all(abs(v - want) > 1e-6 for v in values)


@pytest.mark.parametrize("kind", ["ids", "column", "none"])
@pytest.mark.parametrize("block_size", [1, 3, 64])
def test_blockwise_loss_across_replicas(strategy, kind, block_size):
    """The blockwise path under a strategy: each replica's anchors sit at an
    offset in the global contrast set (its own-view diagonal moves with it)."""
    rng = np.random.default_rng(block_size + len(kind))
    batch = REPLICAS * LOCAL
    z = rng.normal(size=(batch, VIEWS, DIM)).astype("float32")
    y = labels(kind, rng, batch)
    # With labels and a middle block size, also `positives_cap` (whose fused
    # path compares class ranks of the global batch).
    for options in [{}] + ([dict(positives_cap=1)] if block_size == 3 and y is not None else []):
        want, want_grad = single_device(SupConLoss(temperature=0.2, **options), y, z)
        values, grads = replicated(
            strategy, SupConLoss(temperature=0.2, block_size=block_size, **options), y, z)
        np.testing.assert_allclose(sum(values), want, rtol=1e-5, atol=1e-6, err_msg=str(options))
        np.testing.assert_allclose(grads, want_grad, rtol=1e-5, atol=1e-6, err_msg=str(options))
        assert np.abs(want_grad).max() > 1e-3


def test_local_negatives_would_differ(strategy):
    """The bug the gather prevents: a per-replica loss on the local batch only."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(REPLICAS * LOCAL, VIEWS, DIM)).astype("float32")
    y = rng.integers(0, 3, size=REPLICAS * LOCAL)
    want = SupConLoss()(y, z).numpy()
    local = np.mean([SupConLoss()(a, b).numpy()
                     for a, b in zip(np.split(y, REPLICAS), np.split(z, REPLICAS))])
    values, _ = replicated(strategy, SupConLoss(), y, z)
    assert abs(local - want) > 1e-2
    np.testing.assert_allclose(sum(values), want, rtol=1e-5)


def test_explicit_mask_is_local_by_global(strategy):
    rng = np.random.default_rng(1)
    batch = REPLICAS * LOCAL
    z = rng.normal(size=(batch, VIEWS, DIM)).astype("float32")
    mask = (rng.random((batch, batch)) < 0.4).astype("float32")
    np.fill_diagonal(mask, 1)
    want = tf.reduce_mean(sct.losses.supcon_loss(None, z, mask=mask)).numpy()

    @tf.function
    def step(z, m):
        return tf.reduce_mean(sct.losses.supcon_loss(None, z, mask=m)) / REPLICAS

    values = strategy.run(step, args=(split(strategy, z), split(strategy, mask)))
    got = sum(v.numpy() for v in strategy.experimental_local_results(values))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_contrastive_accuracy_uses_global_batch(strategy):
    rng = np.random.default_rng(2)
    batch = REPLICAS * LOCAL
    z = rng.normal(size=(batch, VIEWS, DIM)).astype("float32")
    y = rng.integers(0, 2, size=batch).astype("int32")
    want = sct.models.contrastive_accuracy(y, z).numpy()
    values = strategy.run(tf.function(sct.models.contrastive_accuracy),
                          args=(split(strategy, y), split(strategy, z)))
    got = np.mean([v.numpy() for v in strategy.experimental_local_results(values)])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_all_gather_identity_and_gradient(strategy):
    x = tf.reshape(tf.range(6, dtype=tf.float32), (3, 2))
    assert sct.distribute.all_gather(x) is not None
    np.testing.assert_array_equal(sct.distribute.all_gather(x).numpy(), x.numpy())
    with pytest.raises(TypeError, match="axis"):
        sct.distribute.all_gather(x, axis="0")

    weights = np.arange(8, dtype="float32").reshape(4, 2) + 1

    @tf.function
    def step(local):
        ctx = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            tape.watch(local)
            gathered = sct.distribute.all_gather(local)
            scale = tf.cast(ctx.replica_id_in_sync_group + 1, tf.float32)
            value = tf.reduce_sum(gathered * weights * scale)
        return gathered, tape.gradient(value, local)

    full = np.arange(8, dtype="float32").reshape(4, 2)
    gathered, grads = strategy.run(step, args=(split(strategy, full),))
    for g in strategy.experimental_local_results(gathered):
        np.testing.assert_array_equal(g.numpy(), full)
    # Replica 0's loss weighs by 1, replica 1's by 2: every slice gets 3 * w.
    got = np.concatenate([g.numpy() for g in strategy.experimental_local_results(grads)])
    np.testing.assert_allclose(got, 3 * weights)


def test_uneven_replica_batches_raise(strategy):
    def value_fn(ctx):
        return tf.ones((3 if ctx.replica_id_in_sync_group == 0 else 2, VIEWS, DIM))

    z = strategy.experimental_distribute_values_from_function(value_fn)
    with pytest.raises(tf.errors.InvalidArgumentError, match="drop_remainder=True"):
        strategy.run(tf.function(lambda z: SupConLoss()(None, z)), args=(z,))


def test_check_dataset(strategy):
    images = np.zeros((10, 4, 4, 1), "float32")
    ds = tf.data.Dataset.from_tensor_slices(images)
    assert sct.distribute.check_dataset(ds.batch(4, drop_remainder=True), strategy) == 4
    with pytest.raises(ValueError, match="drop_remainder=True"):
        sct.distribute.check_dataset(ds.batch(4), strategy)
    with pytest.raises(ValueError, match="Received: batch size 5"):
        sct.distribute.check_dataset(ds.batch(5, drop_remainder=True), strategy)
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        sct.distribute.check_dataset(images, strategy)
    # One replica: anything goes.
    assert sct.distribute.check_dataset(ds.batch(5)) is None


def test_fit_rejects_uneven_dataset(strategy):
    with strategy.scope():
        model = sct.models.SupConModel(_plain_encoder(), head=sct.heads.ProjectionHead(
            8, batch_norm=False))
        model.compile(optimizer="sgd")
    views = np.zeros((6, VIEWS, 8, 8, 1), "float32")
    ds = tf.data.Dataset.from_tensor_slices((views, np.zeros(6, "int32"))).batch(3)
    with pytest.raises(ValueError, match="drop_remainder=True"):
        model.fit(ds, verbose=0)


def test_get_strategy_and_chief():
    assert sct.distribute.get_strategy("none") is tf.distribute.get_strategy()
    assert sct.distribute.is_chief()
    with pytest.raises(ValueError, match="Received: kind='gpu'"):
        sct.distribute.get_strategy("gpu")


def _plain_encoder():
    """An encoder without batch-dependent layers."""
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
    ])


def _sync_bn_encoder():
    """One synchronized BatchNorm (a deep ResNet on 8x8 inputs is so sensitive
    to round-off that no tolerance separates right from wrong after a few steps)."""
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3),
        keras.layers.BatchNormalization(synchronized=True),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
    ])


def _fit_losses(make_encoder, strategy, sync_head, cls=sct.models.SupConModel,
                in_model_views=False):
    """Trains the same model (same initial weights, same batches of pre-made
    views) on one device and under `strategy`; returns both loss histories.
    With `in_model_views` the batches are images and the model makes its
    views (a deterministic augmenter, so that both runs see the same ones)."""
    rng = np.random.default_rng(3)
    views = rng.uniform(0, 1, size=(32, VIEWS, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 4, size=32).astype("int32")
    if in_model_views:
        views = views[:, 0] * 255
    augmenter = keras.layers.Rescaling(1 / 255) if in_model_views else None

    def dataset():
        return tf.data.Dataset.from_tensor_slices((views, y)).batch(16, drop_remainder=True)

    histories, weights = [], None
    for scope in (None, strategy):
        keras.utils.set_random_seed(0)
        with (scope.scope() if scope else tf.device("/cpu:0")):
            model = cls(make_encoder(), head=sct.heads.ProjectionHead(
                16, hidden_dims=(16,), synchronized_bn=sync_head,
                normalize=cls is sct.models.SupConModel), probe_classes=4,
                augmenter=augmenter)
            model.compile(optimizer=keras.optimizers.SGD(0.01))
            model.build((None, 8, 8, 1))
            if weights is None:
                weights = model.get_weights()
            else:
                model.set_weights(weights)
        # Two epochs of two steps: long enough to test the updates, short
        # enough that float32 round-off (a 1e-6 change of the weights moves
        # this tiny BatchNorm model's loss by 5% after 12 steps) stays small.
        history = model.fit(dataset(), epochs=2, verbose=0).history
        histories.append(history)
    return histories


@pytest.mark.parametrize("make_encoder", [_plain_encoder, _sync_bn_encoder],
                         ids=["no_batch_norm", "synchronized_bn"])
def test_fit_under_mirrored_matches_one_device(strategy, make_encoder):
    one, mirrored = _fit_losses(make_encoder, strategy, sync_head=True)
    np.testing.assert_allclose(mirrored["loss"], one["loss"], rtol=1e-4)
    np.testing.assert_allclose(mirrored["contrastive_accuracy"],
                               one["contrastive_accuracy"], atol=1e-6)
    np.testing.assert_allclose(mirrored["probe_loss"], one["probe_loss"], rtol=1e-4)
    assert one["loss"][-1] < one["loss"][0]  # it trains


def test_in_model_views_under_mirrored_match_one_device(strategy):
    """Images in, views made by the model's augmenter: under a strategy Keras
    builds the compiled loss before training, which must see the views'
    projections `[batch, 2, dim]` (losses of two views reject `model(images)`,
    `[batch, dim]`); then two replicas train as one device (Barlow Twins here;
    tests/test_contract.py runs every method on two replicas, from views)."""
    one, mirrored = _fit_losses(_sync_bn_encoder, strategy, sync_head=True,
                                cls=sct.models.BarlowTwinsModel, in_model_views=True)
    for name in ("loss", "output_std", "probe_loss"):
        np.testing.assert_allclose(mirrored[name], one[name], rtol=1e-4, err_msg=name)
    assert one["loss"][-1] != one["loss"][0]


def test_moco_and_pcl_with_in_model_views_fit_under_mirrored(strategy):
    """MoCo's loss takes queries and keys `[batch, 2, dim]`: with images in
    (and PCL's `{"image", "index"}`), the model under a strategy builds it
    from the views and trains."""
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, size=(32, 8, 8, 1)).astype("float32")

    def parts():
        return dict(head=sct.heads.ProjectionHead(8, hidden_dims=(8,), batch_norm=False),
                    augmenter=keras.layers.Rescaling(1 / 255), queue_size=16)

    with strategy.scope():
        moco = sct.models.MoCoModel(_plain_encoder(), **parts())
        pcl = sct.models.PCLModel(_plain_encoder(), 32, num_clusters=(2, 4), warmup_epochs=0,
                                  num_prototype_negatives=2, **parts())
        for model in (moco, pcl):
            model.compile(optimizer=keras.optimizers.SGD(0.01))
    ds = tf.data.Dataset.from_tensor_slices(images)
    history = moco.fit(ds.batch(16, drop_remainder=True), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and int(moco.queue.count.numpy()) == 16
    history = pcl.fit(sct.data.with_index(ds).batch(16, drop_remainder=True), epochs=1,
                      verbose=0, callbacks=[sct.models.PCLClustering(images)]).history
    assert np.isfinite(history["loss"][0]) and history["proto_loss"][0] > 0


def test_unsynchronized_batch_norm_differs(strategy):
    """Control: per-replica BatchNorm statistics change the loss."""
    one, mirrored = _fit_losses(_plain_encoder, strategy, sync_head=False)
    assert abs(mirrored["loss"][0] - one["loss"][0]) > 1e-4
