"""MoCo v2 (and SupCon with a labelled queue): queries from the trained
encoder against keys from its momentum copy and a queue of past keys."""

import keras
import tensorflow as tf

from supcon_tf import _cross_replica
from supcon_tf.losses import MoCoLoss
from supcon_tf._checks import check_positive, check_views
from supcon_tf.memory import FeatureQueue
from supcon_tf.mixing import check_mochi, mochi_negatives
from supcon_tf.metrics import query_key_accuracy
from supcon_tf.models.base import check_int, feature_shape
from supcon_tf.models.momentum_model import MomentumModel


@keras.saving.register_keras_serializable(package="supcon_tf")
class MoCoModel(MomentumModel):
    """MoCo v2: a query encoder trained against a momentum key encoder and a queue.

    `fit(x)` trains MoCo v2: the query (view 0, online encoder and head) of
    each image against its key (view 1, the momentum encoder and head) and the
    queue of the last `queue_size` keys (`MoCoLoss`). `fit(x, y)` trains
    SupCon with a labelled queue (the SupCon paper's "MoCo trick"): the
    positives of a query are the keys and queue entries of its class.
    `symmetric=True` adds the loss with the views swapped (solo-learn's MoCo
    v2+) and enqueues both views' keys.

    After each optimizer step the key networks move towards the online ones,
    `target <- m target + (1 - m) online` (`supcon_tf.momentum`), and the
    global batch's keys are enqueued: the loss always reads the queue as it
    was before its batch; slots never filled take no part. Under
    `tf.distribute` every replica enqueues the same all-gathered keys, so all
    replicas hold the same queue. Queue, key networks and the planned step
    count are Keras variables: `.keras` files and `BackupAndRestore` keep them.

    BatchNorm: MoCo's shuffle-BN. The key encoder sees the (global) batch in
    a random order, split into `bn_groups` groups per replica that are
    normalised separately, while the queries are normalised in their own
    groups in batch order; so a query and its key are normalised with
    statistics of different samples and batch statistics cannot tell a
    positive key from the queue's (MoCo, section 3.3). With `bn_groups=1` on
    one device, keys and queries share their batch (no shuffle).

    Metrics: `loss`, `contrastive_accuracy` (how often a query's most similar
    key in the batch is a positive), and the probe's with `probe_classes`.

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        head: The projection head. Defaults to None: `ProjectionHead(128)`.
        augmenter: A Keras layer making each view. Defaults to None (views from
            the pipeline, `[batch, 2, H, W, C]`).
        views: Must be 2. Defaults to 2.
        queue_size: Keys in the queue, >= 1. Defaults to 4096.
        momentum: The key networks' momentum `m` in [0, 1]. Defaults to 0.99.
        temperature: Temperature of the default loss, `MoCoLoss`. Defaults to 0.2.
        symmetric: Also the loss with the views swapped. Defaults to False.
        momentum_schedule: `"constant"` (MoCo) or `"cosine"` (from `momentum`
            to 1 over the steps `fit` plans, as BYOL). Defaults to `"constant"`.
        bn_groups: Groups per replica that BatchNorm normalises separately
            (shuffle-BN above); the batch per replica must be divisible by
            it. With more than one, `fit` leaves out a last partial batch
            (with a warning). Defaults to 2.
        probe_classes: Classes of an online linear probe, or None. Defaults to None.
        mochi_n: MoCHi (Kalantidis et al., NeurIPS 2020): synthetic hard
            negatives mixed, for each query, from its `mochi_n` hardest queue
            negatives (`supcon_tf.mixing.mochi_negatives`); None (the default)
            for none.
        mochi_s: MoCHi's s, mixes of two hard negatives per query, in
            [0, mochi_n]. Defaults to 1024.
        mochi_s_prime: MoCHi's s', mixes of the query with a hard negative,
            >= 0. Defaults to 256.
        mochi_start_epoch: The epoch (0-based) from which MoCHi mixes; before
            it the loss is MoCo's. Needs the steps per epoch of `fit` when
            > 0. Defaults to 0.

    Example:

    >>> import supcon_tf as sct
    >>> enc = sct.encoders.resnet18((28, 28, 1), width=0.125)
    >>> model = MoCoModel(enc, augmenter=sct.augment.simclr((28, 28, 1)), queue_size=1024)
    >>> model.compile(optimizer="adam")   # MoCoLoss(temperature=0.2)
    >>> model.fit(keras.ops.zeros((8, 28, 28, 1)), verbose=0)  # doctest: +SKIP

    Reference:
        He et al., "Momentum Contrast for Unsupervised Visual Representation
        Learning", CVPR 2020; Chen et al., "Improved Baselines with Momentum
        Contrastive Learning", 2020.
    """

    method_name = "moco"
    method_title = "Momentum contrast (MoCo v2)"
    labels = "drop"
    # Views per image (a subclass that reads a third view says so).
    expected_views = 2

    def __init__(self, encoder, head=None, augmenter=None, views=2, queue_size=4096,
                 momentum=0.99, temperature=0.2, symmetric=False,
                 momentum_schedule="constant", bn_groups=2, probe_classes=None,
                 mochi_n=None, mochi_s=1024, mochi_s_prime=256, mochi_start_epoch=0,
                 **kwargs):
        check_views(type(self).__name__, views, self.expected_views)
        mochi = check_mochi(mochi_n, mochi_s, mochi_s_prime, mochi_start_epoch)
        if symmetric and kwargs.get("imix") is not None:
            raise ValueError("i-Mix mixes the queries of view 0 against the keys of view 1; "
                             "with symmetric=True view 0 also makes keys. Use one of them. "
                             f"Received: symmetric=True, imix={kwargs['imix']!r}")
        if kwargs.get("imix") is not None and probe_classes is not None:
            raise ValueError("With i-Mix, MoCo's query encoder sees only the mixed view 0, so "
                             "an online probe would learn from mixed images. Evaluate with "
                             "a linear probe after training instead. Received: "
                             f"imix={kwargs['imix']!r}, probe_classes={probe_classes!r}")
        super().__init__(encoder, head=head, augmenter=augmenter, views=views,
                         momentum=momentum, momentum_schedule=momentum_schedule,
                         probe_classes=probe_classes, **kwargs)
        self.queue_size = check_int(queue_size, "queue_size", 1)
        self.temperature = check_positive(temperature, "temperature")
        self.symmetric = bool(symmetric)
        self.bn_groups = check_int(bn_groups, "bn_groups", 1)
        self.mochi_n, self.mochi_s, self.mochi_s_prime, self.mochi_start_epoch = (
            mochi or (None, mochi_s, mochi_s_prime, mochi_start_epoch))
        if self.mochi_n is not None:
            self.mochi_start_step = self.add_weight(
                shape=(), dtype="int64", initializer="zeros", trainable=False,
                name="mochi_start_step")
        self.queue = None

    def build(self, input_shape):
        super().build(input_shape)
        features = feature_shape(self.encoder, input_shape)
        if self.queue is None:
            dim = self.head.compute_output_shape(features)[-1]
            self.queue = FeatureQueue(self.queue_size, dim, with_labels=True, name="queue")

    def default_loss(self):
        return MoCoLoss(temperature=self.temperature)

    def _grouped(self, views, training, encoder, head):
        """`encode` in `bn_groups` consecutive groups of the batch (while
        training, when BatchNorm uses batch statistics)."""
        if not training or self.bn_groups == 1:
            return self.encode(views, training, encoder, head)
        batch = views.shape[0]
        if batch is not None and batch % self.bn_groups:
            raise ValueError(f"The batch per replica ({batch}) must be divisible by "
                             f"`bn_groups` ({self.bn_groups}).")
        parts = [self.encode(g, training, encoder, head)
                 for g in tf.split(views, self.bn_groups, axis=0)]
        return tuple(tf.concat([p[i] for p in parts], 0) for i in range(2))

    @property
    def full_batches_only(self):
        """Shuffle-BN splits every batch into `bn_groups` equal groups: with
        more than one, `fit` feeds whole batches only (see `FitChecks`)."""
        return self.bn_groups > 1

    def _keys(self, views, training):
        """Keys `[batch, v, D]` of this replica and `[global batch, v, D]`,
        from the momentum networks on a shuffled global batch."""
        shuffle = training and self.bn_groups * _cross_replica.num_replicas() > 1
        if not shuffle:
            _, keys = self._grouped(views, training, self.target_encoder, self.target_head)
            keys = tf.stop_gradient(keys)
            global_keys, _ = _cross_replica.global_batch(keys)
            return keys, global_keys
        images, offset = _cross_replica.global_batch(views)
        n, batch = tf.shape(images)[0], tf.shape(views)[0]
        seed = tf.stack([tf.cast(self.optimizer.iterations, tf.int32), 17])
        order = tf.argsort(tf.random.stateless_uniform([n], seed=seed))   # same on all replicas
        mine = tf.ensure_shape(tf.gather(images, order[offset:offset + batch]), views.shape)
        _, keys = self._grouped(mine, training, self.target_encoder, self.target_head)
        shuffled = _cross_replica.all_gather(tf.stop_gradient(keys))
        global_keys = tf.gather(shuffled, tf.argsort(order))               # batch order again
        return global_keys[offset:offset + batch], global_keys

    def forward(self, views, training):
        # Query j is paired with the key of the other view.
        query_views = views if self.symmetric else views[:, :1]
        key_views = views[:, ::-1] if self.symmetric else views[:, 1:]
        features, queries = self._grouped(query_views, training, self.encoder, self.head)
        keys, global_keys = self._keys(key_views, training)
        return {"features": features, "projections": queries, "keys": keys,
                "global_keys": global_keys}

    def on_fit_begin(self, epochs, steps_per_epoch, initial_epoch=0):
        super().on_fit_begin(epochs, steps_per_epoch, initial_epoch)
        if self.mochi_n is not None and self.mochi_start_epoch > 0:
            if not steps_per_epoch:
                raise ValueError(
                    f"mochi_start_epoch={self.mochi_start_epoch} needs the steps per epoch: "
                    "pass `steps_per_epoch` to fit, or a dataset of known cardinality.")
            self.mochi_start_step.assign(self.fit_start_step(initial_epoch, steps_per_epoch)
                                         + self.mochi_start_epoch * int(steps_per_epoch))

    def _mochi(self, queries, y, queue, queue_labels, pair):
        """MoCHi's synthetic negatives of this step's queries (zeros, which
        the loss ignores, before the start epoch)."""
        replica = tf.distribute.get_replica_context()
        replica_id = 0 if replica is None else replica.replica_id_in_sync_group
        seed = tf.stack([tf.cast(self.optimizer.iterations, tf.int64),
                         tf.cast(replica_id, tf.int64) * 16 + pair])
        shape = tf.stack([tf.shape(queries)[0], self.mochi_s + self.mochi_s_prime,
                          tf.shape(queries)[1]])
        # Before the start epoch no ranking or mixing is computed at all.
        return tf.cond(
            self.optimizer.iterations >= self.mochi_start_step,
            lambda: mochi_negatives(queries, queue, self.mochi_n, self.mochi_s,
                                    self.mochi_s_prime, seed, labels=y,
                                    queue_labels=None if y is None else queue_labels),
            lambda: tf.zeros(shape))

    def contrastive_loss(self, x, y, out, sample_weight, training):
        queue, queue_labels = self.queue.read()
        queries, keys = out["projections"], out["keys"]
        pairs = queries.shape[1]
        total = 0.0
        for j in range(pairs):
            extra = None
            if self.mochi_n is not None and training:
                extra = self._mochi(queries[:, j], y, queue, queue_labels, j)
            total += self.loss(y, tf.stack([queries[:, j], keys[:, j]], axis=1),
                               sample_weight=sample_weight, queue=queue,
                               queue_labels=None if y is None else queue_labels,
                               **({} if extra is None else {"extra_negatives": extra}))
        return total / pairs

    def partners_permuted(self, out, order):
        """i-Mix: the key of view 1 of sample `order[i]` in row i (the queue
        and the keys to enqueue are unchanged)."""
        return {**out, "keys": tf.gather(out["keys"], order)}

    def update_metrics(self, y, out):
        self.contrastive_accuracy_tracker.update_state(
            query_key_accuracy(y, out["projections"][:, 0], out["keys"][:, 0]))

    def after_step(self, y, out):
        self.update_targets()
        keys = out["global_keys"]                                  # [n, v, D]
        n, v = tf.shape(keys)[0], tf.shape(keys)[1]
        if y is None:
            labels = -tf.ones([n], tf.int64)                       # unlabelled: never a positive
        else:
            labels = tf.reshape(tf.cast(_cross_replica.all_gather(y), tf.int64), [-1])
        # View-major, so each view's keys enter in batch order.
        self.queue.enqueue(tf.reshape(tf.transpose(keys, [1, 0, 2]), [n * v, -1]),
                           tf.tile(labels, [v]))

    def get_config(self):
        return {**super().get_config(), "queue_size": self.queue_size,
                "temperature": self.temperature, "symmetric": self.symmetric,
                "bn_groups": self.bn_groups, "mochi_n": self.mochi_n, "mochi_s": self.mochi_s,
                "mochi_s_prime": self.mochi_s_prime,
                "mochi_start_epoch": self.mochi_start_epoch}


@keras.saving.register_keras_serializable(package="supcon_tf")
class SupConQueueModel(MoCoModel):
    """SupCon with a momentum encoder and a labelled queue: `MoCoModel`
    registered as the method whose recipe feeds the labels (a query's
    positives are the keys and queue entries of its class). `MoCoModel`
    itself does the same whenever `fit` gets labels; this class names the
    recipe. Takes the arguments of `MoCoModel`.

    Reference:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020
        (the momentum-encoder variant).
    """

    method_name = "supcon_queue"
    method_title = "Supervised contrastive with a momentum encoder and labelled queue"
    labels = "loss"
