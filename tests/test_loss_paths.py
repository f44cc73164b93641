"""The three implementations of SupConLoss's default options give the same
values and gradients: the general masked path (`fused=False`), the fused dense
path (the default) and the blockwise path (`block_size`), which bounds memory
by O(block x N)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.losses import SupConLoss, supcon_loss
from supcon_tf.losses import _fused
from tests.reference import supcon_reference


def _labels(kind, rng, batch, classes=3):
    if kind == "none":
        return None
    ids = rng.integers(0, classes, size=batch)
    if kind == "column":
        return ids.reshape(-1, 1)
    if kind == "float":
        return (ids * 2).astype("float32")   # whole-number float ids
    if kind == "unique":
        return np.arange(batch) + 100
    return ids


def _value_and_grad(y, z, uniform=False, **options):
    """The per-sample losses and the gradient of their weighted sum: with
    weights that differ per sample, or (`uniform`) of their mean, the upstream
    gradient the blockwise paths take from their forward pass."""
    z = tf.constant(z)
    weights = (tf.fill([z.shape[0]], 1.0 / z.shape[0]) if uniform
               else tf.linspace(0.5, 1.5, z.shape[0]))
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = supcon_loss(y, z, **options)
        total = tf.reduce_sum(value * weights)
    return value.numpy(), tape.gradient(total, z).numpy()


CASES = [(kind, batch, views, t)
         for kind in ["ids", "column", "float", "unique", "none"]
         for batch, views in [(9, 2), (7, 3), (12, 1)]
         for t in [0.1, 0.5]]


@pytest.mark.parametrize("kind,batch,views,temperature", CASES)
def test_fused_and_blockwise_equal_the_masked_path(kind, batch, views, temperature):
    rng = np.random.default_rng(batch * 10 + views)
    z = rng.normal(size=(batch, views, 6)).astype("float32")
    y = _labels(kind, rng, batch)
    if y is None and views == 1:
        # No labels and one view: no anchor could have a positive (a loss of
        # exactly 0); every path says so instead of training on it.
        for options in [dict(fused=False), dict(), dict(block_size=4)]:
            with pytest.raises(ValueError, match="one view per sample"):
                _value_and_grad(y, z, temperature=temperature, **options)
        return
    want, want_grad = _value_and_grad(y, z, temperature=temperature, fused=False)
    # Not trivially zero, except with one view and every sample its own
    # class: then no anchor has a positive and every path must give 0.
    no_positives = views == 1 and kind in ("unique", "none")
    assert (np.abs(want_grad).max() == 0) if no_positives else (
        np.abs(want_grad).max() > 1e-2)
    for options in [dict(), dict(block_size=1), dict(block_size=4),
                    dict(block_size=batch * views), dict(block_size=1000)]:
        value, grad = _value_and_grad(y, z, temperature=temperature, **options)
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-5, err_msg=str(options))
        np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-5,
                                   err_msg=str(options))
    # The mean's gradient: the blockwise path scales what its forward pass took.
    _, want_mean = _value_and_grad(y, z, uniform=True, temperature=temperature, fused=False)
    for options in [dict(block_size=1), dict(block_size=4)]:
        _, grad = _value_and_grad(y, z, uniform=True, temperature=temperature, **options)
        np.testing.assert_allclose(grad, want_mean, rtol=1e-5, atol=1e-6, err_msg=str(options))


def test_matches_loop_reference_with_base_temperature_and_no_normalize():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(10, 2, 5)).astype("float32") / 2
    y = rng.integers(0, 4, size=10)
    options = dict(temperature=0.3, base_temperature=0.07, normalize=False)
    want = supcon_reference(y, z, **options)
    for extra in [dict(), dict(block_size=3)]:
        value, _ = _value_and_grad(y, z, **options, **extra)
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block_size", [None, 5])
def test_stable_at_low_temperature(block_size):
    # Nearly parallel embeddings at T=0.01 (logits near 100) and one sample
    # far away (near -100): neither overflows nor underflows to NaN.
    rng = np.random.default_rng(4)
    z = (rng.normal(size=(1, 1, 6)) + 0.05 * rng.normal(size=(8, 2, 6))).astype("float32")
    z[1] = -z[1]
    y = rng.integers(0, 3, size=8)
    value, grad = _value_and_grad(y, z, temperature=0.01, block_size=block_size)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, supcon_reference(y, z, temperature=0.01),
                               rtol=1e-4, atol=1e-3)


def test_anchor_without_positive_and_single_row():
    # Sample 2 is alone in its class with one view: it contributes 0, no NaN.
    z = np.random.default_rng(5).normal(size=(4, 1, 3)).astype("float32")
    for block_size in [None, 2]:
        value, grad = _value_and_grad(np.array([0, 0, 7, 0]), z, block_size=block_size)
        assert value[2] == 0 and np.all(np.isfinite(grad))
        np.testing.assert_allclose(value, supcon_reference(np.array([0, 0, 7, 0]), z),
                                   rtol=1e-5, atol=1e-6)
        value, grad = _value_and_grad(np.array([1]), z[:1], block_size=block_size)
        assert value.tolist() == [0.0] and np.all(grad == 0)


def _plain_grad(y, z):
    z = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        total = tf.reduce_sum(supcon_loss(y, z, fused=False))
    return tape.gradient(total, z).numpy()


def test_unknown_shapes_in_graph_mode():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(8, 2, 4)).astype("float32")
    y = rng.integers(0, 3, size=8)
    want = supcon_reference(y, z)
    for block_size in [None, 3]:
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64),
                                      tf.TensorSpec([None, None, None], tf.float32)])
        def fn(labels, z, block_size=block_size):
            with tf.GradientTape() as tape:
                tape.watch(z)
                value = supcon_loss(labels, z, block_size=block_size)
                total = tf.reduce_sum(value)
            return value, tape.gradient(total, z)

        value, grad = fn(tf.constant(y), tf.constant(z))
        np.testing.assert_allclose(value.numpy(), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grad.numpy(), _plain_grad(y, z), rtol=1e-5, atol=1e-5)
        with pytest.raises(tf.errors.InvalidArgumentError, match="number of labels"):
            fn(tf.constant(y[:5]), tf.constant(z))


def _has_while_loop(fn, *args):
    graph = tf.function(fn).get_concrete_function(*args).graph
    return any(op.type in ("While", "StatelessWhile") for op in graph.get_operations())


def test_automatic_choice_by_static_size(monkeypatch):
    z = tf.constant(np.random.default_rng(7).normal(size=(6, 2, 4)).astype("float32"))
    y = tf.constant([0, 1, 0, 1, 2, 2])
    assert not _has_while_loop(lambda z: supcon_loss(y, z), z)
    assert _has_while_loop(lambda z: supcon_loss(y, z, block_size=4), z)
    # Above the threshold the automatic choice is blockwise, with equal values.
    dense = supcon_loss(y, z).numpy()
    monkeypatch.setattr(_fused, "AUTO_BLOCKWISE_ABOVE", 12 * 12 - 1)
    monkeypatch.setattr(_fused, "AUTO_BLOCK_SIZE", 5)
    assert _has_while_loop(lambda z: supcon_loss(y, z), z)
    np.testing.assert_allclose(supcon_loss(y, z).numpy(), dense, rtol=1e-5, atol=1e-6)


_PEAK_SCRIPT = """
import numpy as np, tensorflow as tf
from supcon_tf.losses import supcon_loss
n = 8192
z = tf.constant(np.random.default_rng(0).normal(size=(n // 2, 2, 32)), tf.float32)
y = tf.constant(np.arange(n // 2) % 10)


def status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024


def peak_growth_mb(block, z=z, y=y, **options):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = tf.reduce_sum(supcon_loss(y, z, block_size=block, **options))
        return tape.gradient(value, z)

    step.get_concrete_function()  # trace
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident memory (VmHWM) to the current one
    before = status_mb("VmRSS:")
    step().numpy()
    return status_mb("VmHWM:") - before


# First the runtime's own first-call allocations (thread pools, kernels), on
# a small batch of each path. Then the dense path last: a path measured later
# may reuse memory the allocator kept from an earlier one, which its growth
# then does not show.
for block, options in ((256, {}), (256, {"variant": "in"}), (None, {})):
    peak_growth_mb(block, z[:300], y[:300], **options)
print(peak_growth_mb(256), peak_growth_mb(256, variant="in"), peak_growth_mb(None))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="needs Linux's /proc/self/clear_refs to reset the peak memory")
def test_blockwise_bounds_peak_memory():
    """At N = 8192 rows the dense path's N x N buffers (256 MiB each) raise the
    process's peak memory; 256-row blocks (8 MiB) do not, on the default
    path nor on the general one (here variant="in")."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], capture_output=True,
                         text=True, check=True)
    blockwise, general, dense = map(float, out.stdout.strip().splitlines()[-1].split())
    assert dense > 400, dense
    assert blockwise < dense / 4, (blockwise, dense)
    # The general path ran after the default one and may have reused at most
    # what that one grew by.
    assert general + blockwise < dense / 4, (general, blockwise, dense)


def test_keras_loss_with_block_size_fits_and_round_trips():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 4, size=64)
    centers = rng.normal(size=(4, 8))
    x = (centers[y] + 0.5 * rng.normal(size=(64, 8))).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16),
                              keras.layers.Reshape((1, 16))])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=SupConLoss(temperature=0.2, block_size=8))
    history = model.fit(x, y, batch_size=32, epochs=6, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    loss = SupConLoss(block_size=8)
    config = loss.get_config()
    assert config["block_size"] == 8
    assert SupConLoss.from_config(config).get_config() == config


@pytest.mark.parametrize("options,message", [
    (dict(block_size=0), "block_size=0"),
    (dict(block_size=-3, variant="in"), "block_size=-3"),
])
def test_bad_block_size_raises_value_error(options, message):
    z = np.zeros((4, 2, 3), "float32")
    with pytest.raises(ValueError, match=message):
        supcon_loss(np.arange(4), z, **options)
    with pytest.raises(ValueError, match=message):
        SupConLoss(**options)


def test_block_size_type():
    for bad in [2.0, True, "8"]:
        with pytest.raises(TypeError, match="block_size"):
            SupConLoss(block_size=bad)


# Each option with two kinds of positives, each kind with three or four
# options: the pairs where an option reads what the kind builds (the cap ranks
# multi-hot labels, mask rows and queue columns; one anchor view meets a mask
# and a queue; the denominators meet multi-hot labels, no labels and a queue).
# Each pair's XLA-compiled blocks are most of its time, so not the full grid.
OPTION_KINDS = [(options, kind) for options, kinds in [
    (dict(variant="in"), ("ids", "mask")),
    (dict(denominator="one_positive"), ("ids", "queue")),
    (dict(denominator="only_negatives"), ("multi_hot", "none")),
    (dict(positives_cap=1), ("multi_hot", "queue")),
    (dict(positives_cap=0, variant="in"), ("mask", "ids")),
    (dict(contrast_mode="one"), ("none", "queue")),
    (dict(contrast_mode="one", denominator="only_negatives", positives_cap=2),
     ("multi_hot", "mask")),
    (dict(fused=False), ("none", "ids")),
    (dict(positives_cap=2, fused=False), ("queue", "multi_hot"))] for kind in kinds]


@pytest.mark.parametrize("options,kind", OPTION_KINDS)
def test_every_option_blockwise_equals_dense_and_the_loop_reference(options, kind):
    """The general path in row blocks (`block_size`) gives the dense path's
    values and gradients for every option, with labels, multi-hot labels, a
    mask, no labels and a queue."""
    rng = np.random.default_rng(len(kind) + 7 * len(options))
    batch, views = 7, 2
    z = rng.normal(size=(batch, views, 5)).astype("float32")
    y, extra = rng.integers(0, 3, size=batch), {}
    if kind == "multi_hot":
        y = (rng.random((batch, 4)) < 0.4).astype("float32")
    elif kind == "mask":
        extra["mask"] = (rng.random((batch, batch)) < 0.4).astype("float32")
        extra["mask"][np.arange(batch), np.arange(batch)] = 1.0
        y = None
    elif kind == "none":
        y = None
    elif kind == "queue":
        extra["queue"] = rng.normal(size=(6, 5)).astype("float32")
        extra["queue_labels"] = rng.integers(0, 3, size=6)
    want, want_grad = _value_and_grad(y, z, temperature=0.3, **extra, **options)
    reference = supcon_reference(y, z, temperature=0.3, **extra,
                                 **{k: v for k, v in options.items() if k != "fused"})
    np.testing.assert_allclose(want, reference, rtol=1e-5, atol=1e-5)
    assert np.abs(want_grad).max() > 1e-3
    anchors = batch * (1 if options.get("contrast_mode") == "one" else views)
    for block_size in [1, 3, anchors, 100]:
        value, grad = _value_and_grad(y, z, temperature=0.3, block_size=block_size,
                                      **extra, **options)
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6, err_msg=str(block_size))
        np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6,
                                   err_msg=str(block_size))
    # The mean's gradient, which the blocks take in their forward pass.
    _, want_mean = _value_and_grad(y, z, uniform=True, temperature=0.3, **extra, **options)
    _, grad = _value_and_grad(y, z, uniform=True, temperature=0.3, block_size=3,
                              **extra, **options)
    np.testing.assert_allclose(grad, want_mean, rtol=1e-5, atol=1e-6)


def test_class_segments():
    ids = _fused.class_segments(tf.constant([5, 3, 5, 9, 3, 3])).numpy()
    assert ids.tolist() == [1, 0, 1, 2, 0, 0]
    floats = _fused.class_segments(tf.constant([0.5, -1.0, 0.5])).numpy()
    assert floats.tolist() == [1, 0, 1]


@pytest.mark.parametrize("options", [dict(), dict(positives_cap=1), dict(variant="in")])
def test_blockwise_path_compiles_with_xla(options):
    """A train step compiled whole with XLA (`jit_compile=True`) runs the
    blockwise paths (blocks of a static size, the last one padded; the own
    entries masked inside the compiled pass) to the same losses as without."""
    x = np.random.default_rng(3).normal(size=(20, 2, 6)).astype("float32")
    y = np.arange(20) % 3
    losses = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2, 6)), keras.layers.Dense(6)])
        model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit,
                      loss=SupConLoss(block_size=7, **options))   # 20 anchors: 7 + 7 + 6
        history = model.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
        losses.append(history.history["loss"])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    assert losses[0][1] < losses[0][0]
