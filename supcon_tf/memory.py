"""What the methods remember: MoCo's `FeatureQueue`, NPID's `MemoryBank`
(one slot per training sample), SwAV's learnable `Prototypes` and SpCL's
`HybridMemory` (class centroids and one slot per sample, with labels).

The state lives in non-trainable Keras variables, so a `.keras` file and
`keras.callbacks.BackupAndRestore` keep it: a resumed run continues with the
queue it had, not an empty one.
"""

import numbers

import keras
import tensorflow as tf

from supcon_tf import _backend, _cross_replica


@keras.saving.register_keras_serializable(package="supcon_tf")
class FeatureQueue(keras.layers.Layer):
    """A FIFO ring of the last `size` embeddings (and optionally their labels).

    `read()` returns the filled entries, oldest slot first in slot order
    (slots never filled take no part: no random vectors stand in for real
    negatives); `enqueue(keys, labels)` writes a batch of keys over the oldest
    slots, wrapping around for any `size` (a batch larger than the queue keeps
    its last `size` keys). Read before you enqueue: the loss of a batch sees
    the queue as it was before that batch.

    Under `tf.distribute`, call `enqueue` from every replica with the same
    all-gathered keys of the global batch (in global order): every replica
    then holds the same queue. `supcon_tf.models.MoCoModel` does this.

    Args:
        size: Number of slots, >= 1.
        dim: Embedding size, >= 1.
        with_labels: Also store an int64 label per slot. Defaults to False.

    Example:

    >>> q = FeatureQueue(size=3, dim=2)
    >>> q.enqueue(tf.ones((2, 2)))
    >>> q.read()[0].shape
    TensorShape([2, 2])

    Reference:
        He et al., "Momentum Contrast for Unsupervised Visual Representation
        Learning", CVPR 2020.
    """

    def __init__(self, size, dim, with_labels=False, **kwargs):
        _backend.require_tensorflow(f"supcon_tf.memory.{type(self).__name__}")
        super().__init__(**kwargs)
        for name, value in (("size", size), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
        self.size, self.dim, self.with_labels = int(size), int(dim), bool(with_labels)
        self.values = self.add_weight(shape=(self.size, self.dim), initializer="zeros",
                                      trainable=False, name="values")
        self.labels = (self.add_weight(shape=(self.size,), initializer="zeros", dtype="int64",
                                       trainable=False, name="labels")
                       if self.with_labels else None)
        self.pointer = self.add_weight(shape=(), initializer="zeros", dtype="int64",
                                       trainable=False, name="pointer")
        self.count = self.add_weight(shape=(), initializer="zeros", dtype="int64",
                                     trainable=False, name="count")
        self.built = True

    def read(self):
        """`(values [n, dim], labels [n] or None)` of the `n <= size` filled slots."""
        n = tf.convert_to_tensor(self.count)
        values = tf.convert_to_tensor(self.values)[:n]
        labels = None if self.labels is None else tf.convert_to_tensor(self.labels)[:n]
        return values, labels

    def enqueue(self, keys, labels=None):
        """Writes `keys [n, dim]` (and `labels [n]`) into the oldest slots."""
        keys = tf.convert_to_tensor(keys)
        if keys.shape.rank != 2 or (keys.shape[1] is not None and keys.shape[1] != self.dim):
            raise ValueError(f"`keys` must be [n, {self.dim}] for this queue (dim={self.dim}). "
                             f"Received: keys.shape={keys.shape}")
        if self.with_labels and labels is None:
            raise ValueError("This queue stores labels: pass `labels` with the keys.")
        if not self.with_labels and labels is not None:
            raise ValueError("This queue stores no labels (with_labels=False). Received "
                             f"labels of shape {tf.convert_to_tensor(labels).shape}")
        n = tf.shape(keys, out_type=tf.int64)[0]
        # Only the last `size` keys of an oversized batch survive.
        kept = tf.minimum(n, self.size)
        keys = tf.cast(keys[n - kept:], self.values.dtype)
        pointer = tf.convert_to_tensor(self.pointer)
        slots = ((pointer + n - kept + tf.range(kept, dtype=tf.int64)) % self.size)[:, None]
        if self.with_labels:
            labels = tf.reshape(tf.convert_to_tensor(labels), [-1])
            if not (labels.dtype.is_integer or labels.dtype.is_floating):
                raise TypeError("`labels` must be class ids (integers). Received: "
                                f"labels.dtype={labels.dtype.name}")
            if labels.dtype.is_floating:
                # Class ids as floats must be whole numbers: 1.7 is not class 1.
                if tf.executing_eagerly():
                    bad = labels.numpy()[labels.numpy() != labels.numpy().round()]
                    if bad.size:
                        raise ValueError("`labels` must be class ids (whole numbers). "
                                         f"Received: a label {bad[0]!r}")
                else:
                    with tf.control_dependencies([tf.debugging.assert_equal(
                            labels, tf.round(labels),
                            message="FeatureQueue.enqueue: labels must be class ids "
                                    "(whole numbers)")]):
                        labels = tf.identity(labels)
            labels = tf.cast(labels, tf.int64)
            with tf.control_dependencies([tf.debugging.assert_equal(
                    tf.shape(labels, out_type=tf.int64)[0], n,
                    message="FeatureQueue.enqueue: one label per key")]):
                labels = tf.identity(labels[n - kept:])
        # In place: only the written slots move (not a copy of the whole queue).
        _cross_replica.scatter_update(self.values, slots, keys)
        if self.with_labels:
            _cross_replica.scatter_update(self.labels, slots, labels)
        _cross_replica.assign([(self.pointer, (pointer + n) % self.size),
                               (self.count, tf.minimum(tf.convert_to_tensor(self.count) + n,
                                                       self.size))])

    def reset(self):
        """Empties the queue."""
        _cross_replica.assign([(self.pointer, tf.zeros((), tf.int64)),
                               (self.count, tf.zeros((), tf.int64))])

    def call(self, inputs=None):
        return self.read()[0]

    def get_config(self):
        return {**super().get_config(), "size": self.size, "dim": self.dim,
                "with_labels": self.with_labels}


@keras.saving.register_keras_serializable(package="supcon_tf")
class MemoryBank(keras.layers.Layer):
    """One L2-normalised embedding per training sample, updated with momentum.

    Non-parametric instance discrimination (Wu et al., CVPR 2018) keeps the
    embedding of every sample of the dataset: slot `i` holds sample `i`'s
    (`supcon_tf.data.with_index` feeds the indices). `update(index,
    features)` sets `v_i <- normalize(m v_i + (1 - m) f_i)`. The slots start
    as random unit vectors. Under `tf.distribute`, call `update` from every
    replica with the same all-gathered indices and features (as
    `NPIDModel` does): every replica then holds the same bank.

    Args:
        size: Number of slots: the number of training samples, >= 1.
        dim: Embedding size, >= 1.
        momentum: `m` in [0, 1). Defaults to 0.5 (the paper's).
        seed: Seed of the initial vectors. Defaults to None.
    """

    def __init__(self, size, dim, momentum=0.5, seed=None, **kwargs):
        _backend.require_tensorflow(f"supcon_tf.memory.{type(self).__name__}")
        super().__init__(**kwargs)
        for name, value in (("size", size), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) \
                or not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be a number in [0, 1). Received: momentum={momentum!r}")
        self.size, self.dim, self.momentum, self.seed = int(size), int(dim), float(momentum), seed
        self.values = self.add_weight(
            shape=(self.size, self.dim), trainable=False, name="values",
            initializer=lambda shape, dtype=None: tf.math.l2_normalize(
                keras.random.normal(shape, seed=seed), axis=1))
        self.built = True

    def read(self, index=None):
        """All slots `[size, dim]`, or those at `index`."""
        values = tf.convert_to_tensor(self.values)
        return values if index is None else tf.gather(values, self.check_index(index))

    def check_index(self, index):
        """`index` as int64 `[n]`, with an error for any outside `[0, size)`."""
        index = tf.reshape(tf.cast(index, tf.int64), [-1])
        with tf.control_dependencies([
                tf.debugging.assert_non_negative(index, message="MemoryBank: negative index"),
                tf.debugging.assert_less(
                    index, tf.constant(self.size, tf.int64),
                    message=f"MemoryBank: a sample index >= the bank's size={self.size}: "
                            "the bank must have one slot per sample of the dataset")]):
            return tf.identity(index)

    def update(self, index, features):
        """`v_i <- normalize(m v_i + (1 - m) f_i)` for each `i` of `index`."""
        index = self.check_index(index)
        features = tf.math.l2_normalize(tf.cast(features, self.values.dtype), axis=1)
        values = tf.convert_to_tensor(self.values)
        mixed = self.momentum * tf.gather(values, index) + (1.0 - self.momentum) * features
        _cross_replica.scatter_update(self.values, index[:, None],
                                      tf.math.l2_normalize(mixed, axis=1))

    def call(self, inputs=None):
        return self.read()

    def get_config(self):
        return {**super().get_config(), "size": self.size, "dim": self.dim,
                "momentum": self.momentum, "seed": self.seed}


@keras.saving.register_keras_serializable(package="supcon_tf")
class Prototypes(keras.layers.Layer):
    """SwAV's prototypes: `num_prototypes` learnable vectors `c_k` (the
    columns of `kernel [dim, K]`) and the scores `z . c_k` of embeddings `z`
    against them, a Dense layer without bias.

    The prototypes start as unit vectors; `unit_kernel()` gives the kernel
    with every column rescaled to unit norm, which
    `supcon_tf.models.SwAVModel` writes back after every optimizer step (SwAV
    normalises its prototypes before each forward pass), so that for
    L2-normalised `z` the scores are cosine similarities.

    `call(z, gradient=1.0)`: with `gradient=0.0` the scores are the same but
    no gradient reaches the prototypes (SwAV freezes them for the first
    iterations); a tensor works too.

    Args:
        num_prototypes: `K`, >= 2. Defaults to 3000 (SwAV's).
        seed: Seed of the initial prototypes, or None. Defaults to None.

    Example:

    >>> layer = Prototypes(10, seed=0)
    >>> layer(keras.ops.ones((4, 2, 16))).shape
    (4, 2, 10)

    Reference:
        Caron et al., "Unsupervised Learning of Visual Features by Contrasting
        Cluster Assignments", NeurIPS 2020.
    """

    def __init__(self, num_prototypes=3000, seed=None, **kwargs):
        _backend.require_tensorflow(f"supcon_tf.memory.{type(self).__name__}")
        super().__init__(**kwargs)
        if isinstance(num_prototypes, bool) or not isinstance(num_prototypes, int) \
                or num_prototypes < 2:
            raise ValueError("`num_prototypes` must be an integer >= 2. "
                             f"Received: num_prototypes={num_prototypes!r}")
        self.num_prototypes = num_prototypes
        self.seed = seed

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError("Prototypes needs the embedding size (the last axis) to be "
                             f"known. Received: input_shape={input_shape}")

        def unit_columns(shape, dtype=None):
            w = keras.random.normal(shape, seed=self.seed, dtype=dtype)
            return keras.ops.normalize(w, axis=0)

        self.kernel = self.add_weight(shape=(dim, self.num_prototypes),
                                      initializer=unit_columns, name="kernel")

    def unit_kernel(self):
        """The kernel with unit-norm columns (the normalised prototypes)."""
        return keras.ops.normalize(keras.ops.convert_to_tensor(self.kernel), axis=0)

    def call(self, inputs, gradient=1.0):
        kernel = keras.ops.convert_to_tensor(self.kernel)
        if not (isinstance(gradient, (int, float)) and gradient == 1.0):
            # Same value; the gradient reaching the kernel is scaled by `gradient`.
            frozen = keras.ops.stop_gradient(kernel)
            kernel = frozen + keras.ops.cast(gradient, kernel.dtype) * (kernel - frozen)
        return keras.ops.matmul(keras.ops.cast(inputs, kernel.dtype), kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_prototypes,)

    def get_config(self):
        return {**super().get_config(), "num_prototypes": self.num_prototypes,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="supcon_tf")
class HybridMemory(keras.layers.Layer):
    """SpCL's hybrid memory: `num_classes` class centroids, then one slot per
    training sample, each a unit vector with a label.

    Slots `[0, num_classes)` hold the labelled classes' centroids (label: the
    class); slot `num_classes + i` holds unlabelled sample `i`'s feature,
    labelled with its cluster (or its own label when it is an outlier); the
    slot of a labelled sample takes no part (label -1), its class centroid
    stands for it. `update(index, features)` moves each slot of `index`
    towards its feature, `v <- normalize(m v + (1 - m) f)`, one feature
    after the other in batch order (a class centroid that appears k times in
    a batch is updated k times, as the official code's loop does).

    Slots start as random unit vectors, each labelled as itself; labels and
    slots are set by `supcon_tf.models.SpCLClustering` (`assign_labels`,
    `values.assign`). Under `tf.distribute`, call `update` from every replica
    with the same all-gathered indices and features: every replica then holds
    the same memory.

    Args:
        num_classes: Labelled classes (centroid slots), >= 0.
        num_samples: Training samples (one slot each), >= 1.
        dim: Feature size, >= 1.
        momentum: `m` in [0, 1). Defaults to 0.2 (SpCL's).
        seed: Seed of the initial vectors. Defaults to None.

    Reference:
        Ge et al., "Self-paced Contrastive Learning with Hybrid Memory for
        Domain Adaptive Object Re-ID", NeurIPS 2020.
    """

    def __init__(self, num_classes, num_samples, dim, momentum=0.2, seed=None, **kwargs):
        _backend.require_tensorflow(f"supcon_tf.memory.{type(self).__name__}")
        super().__init__(**kwargs)
        for name, value, low in (("num_classes", num_classes, 0),
                                 ("num_samples", num_samples, 1), ("dim", dim, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}. "
                                 f"Received: {name}={value!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) \
                or not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be a number in [0, 1). Received: momentum={momentum!r}")
        self.num_classes, self.num_samples = int(num_classes), int(num_samples)
        self.dim, self.momentum, self.seed = int(dim), float(momentum), seed
        self.size = self.num_classes + self.num_samples
        self.values = self.add_weight(
            shape=(self.size, self.dim), trainable=False, name="values",
            initializer=lambda shape, dtype=None: tf.math.l2_normalize(
                keras.random.normal(shape, seed=seed), axis=1))
        self.labels = self.add_weight(
            shape=(self.size,), trainable=False, dtype="int32", name="labels",
            initializer=lambda shape, dtype=None: tf.range(shape[0], dtype=tf.int32))
        self.built = True

    def slots(self, index, y=None):
        """Each sample's slot: its class centroid's when it is labelled
        (`y >= 0`), else its own (`num_classes + index`). `y` None: none is
        labelled."""
        index = tf.reshape(tf.cast(index, tf.int64), [-1])
        checks = [tf.debugging.assert_non_negative(index, message="HybridMemory: negative index"),
                  tf.debugging.assert_less(
                      index, tf.constant(self.num_samples, tf.int64),
                      message=f"HybridMemory: a sample index >= num_samples={self.num_samples}: "
                              "the memory needs one slot per sample of the dataset")]
        own = index + self.num_classes
        if y is None:
            with tf.control_dependencies(checks):
                return tf.identity(own)
        y = tf.reshape(tf.cast(y, tf.int64), [-1])
        checks.append(tf.debugging.assert_less(
            y, tf.constant(max(self.num_classes, 0), tf.int64),
            message=f"HybridMemory: a label >= num_classes={self.num_classes} (labels are "
                    "class ids, -1 for an unlabelled sample)"))
        checks.append(tf.debugging.assert_greater_equal(
            y, tf.constant(-1, tf.int64), message="HybridMemory: a label < -1"))
        with tf.control_dependencies(checks):
            return tf.where(y >= 0, y, own)

    def read(self):
        """`(values [size, dim], labels [size])`."""
        return tf.convert_to_tensor(self.values), tf.convert_to_tensor(self.labels)

    def update(self, slots, features):
        """`v <- normalize(m v + (1 - m) f)` for each slot, in order."""
        slots = tf.reshape(tf.cast(slots, tf.int64), [-1])
        features = tf.math.l2_normalize(tf.cast(features, self.values.dtype), axis=1)
        unique, group = tf.unique(slots)
        n = tf.shape(slots)[0]
        # Each feature's rank among the earlier ones of its slot: the round in
        # which it is applied (every slot changes at most once per round).
        earlier = tf.linalg.band_part(tf.ones([n, n]), -1, 0) - tf.eye(n)
        same = tf.cast(tf.equal(slots[:, None], slots[None, :]), tf.float32)
        rank = tf.cast(tf.reduce_sum(same * earlier, axis=1), tf.int32)
        current = tf.gather(tf.convert_to_tensor(self.values), unique)

        def body(r, current):
            members = tf.where(tf.equal(rank, r))[:, 0]
            g = tf.gather(group, members)[:, None]
            mixed = self.momentum * tf.gather_nd(current, g) + (1.0 - self.momentum) * tf.gather(
                features, members)
            return r + 1, tf.tensor_scatter_nd_update(current, g,
                                                      tf.math.l2_normalize(mixed, axis=1))

        _, current = tf.while_loop(lambda r, _: r <= tf.reduce_max(rank), body,
                                   (tf.constant(0), current))
        _cross_replica.scatter_update(self.values, unique[:, None], current)

    def assign_labels(self, labels):
        """Sets every slot's label (`[size]`, -1 for a slot that takes no part)."""
        labels = tf.convert_to_tensor(labels, tf.int32)
        if labels.shape != (self.size,):
            raise ValueError(f"`labels` must hold one label per slot ({self.size}). "
                             f"Received: labels.shape={tuple(labels.shape)}")
        self.labels.assign(labels)

    def call(self, inputs=None):
        return self.read()[0]

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "num_samples": self.num_samples, "dim": self.dim,
                "momentum": self.momentum, "seed": self.seed}
