"""Self-paced contrastive learning (SpCL, Ge et al., NeurIPS 2020): a hybrid
memory of labelled classes' centroids and unlabelled samples' features, one
contrastive loss over classes, clusters and outliers, and a self-paced
re-clustering of the unlabelled samples every epoch (`SpCLClustering`)."""

import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from supcon_tf import _cross_replica, self_paced
from supcon_tf._checks import check_int, check_positive
from supcon_tf.heads import ProjectionHead
from supcon_tf.losses.spcl import HybridMemoryLoss, label_scores, loss_from_scores
from supcon_tf.memory import HybridMemory
from supcon_tf.models.base import ContrastiveModel, LossReadsState
from supcon_tf.models.npid import OneIndexedView, split_indexed


@keras.saving.register_keras_serializable(package="supcon_tf")
class SpCLModel(LossReadsState, OneIndexedView, ContrastiveModel):
    """SpCL: labelled and unlabelled samples against one hybrid memory.

    Inputs are `supcon_tf.data.with_index(dataset)` (`{"image", "index"}`),
    one augmented view per image. Labels, when given, are class ids in
    `[0, num_classes)` for labelled (source-domain) samples and -1 for
    unlabelled (target-domain) ones; without labels every sample is
    unlabelled (SpCL's unsupervised setting).

    The memory (`supcon_tf.memory.HybridMemory`) holds the classes'
    centroids and one feature per sample. A labelled sample's target is its
    class, an unlabelled one's its cluster, or itself when it is an outlier;
    the loss (`supcon_tf.losses.HybridMemoryLoss`, T 0.05) is the
    cross-entropy over every class, cluster and outlier, each scored by the
    mean similarity to its slots. After each step the batch's slots (a
    labelled sample's class centroid, an unlabelled one's own slot) move
    towards its features with momentum 0.2. `SpCLClustering` initialises the
    memory from the encoder and re-clusters the unlabelled features every
    epoch (DBSCAN on the k-reciprocal Jaccard distance, with the
    independence and compactness criteria: `supcon_tf.self_paced`).

    The embedding is the encoder's feature, L2-normalised (the default head
    has no layers), as SpCL's ResNet with its normalised output.
    Differences from the official code (yxgeee/SpCL): no domain-specific
    BatchNorm; the loss is the mean over the batch (the official adds the
    labelled half's mean and the unlabelled half's: for equal halves, twice
    this); the log-softmax has no 1e-6 terms (`HybridMemoryLoss`).

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        num_samples: Training samples (the dataset fed through `with_index`).
        num_classes: Labelled classes. Defaults to 0: every sample is
            unlabelled, and labels (if any) feed only the probe.
        head: Defaults to None: no layers, L2 normalisation.
        augmenter: A Keras layer making the view. Defaults to None.
        temperature: Defaults to 0.05 (SpCL's).
        memory_momentum: Defaults to 0.2 (SpCL's).
        probe_classes: Classes of an online linear probe trained on the
            labelled samples, or None.

    Metrics: `loss`, `contrastive_accuracy` (how often a sample's own label
    scores highest), `output_std`, the probe's; with `SpCLClustering`,
    `clusters`, `outliers` and `clustering_seconds` per epoch.

    Reference:
        Ge et al., "Self-paced Contrastive Learning with Hybrid Memory for
        Domain Adaptive Object Re-ID", NeurIPS 2020.
    """

    supports_imix = False

    own_loss = HybridMemoryLoss
    own_loss_reads = "its hybrid memory"
    method_name = "spcl"
    method_title = "Self-paced contrastive learning with a hybrid memory (SpCL)"
    labels = "drop"
    indexed = True
    head_options = {"kind": "none"}

    @classmethod
    def from_recipe(cls, encoder, head, augmenter, probe_classes, context, **args):
        """One memory slot per training example (`num_examples`); a recipe's
        images are all unlabelled (SpCL's unsupervised setting)."""
        return cls(encoder, context["num_examples"], head=head, augmenter=augmenter,
                   probe_classes=probe_classes, **args)

    def recipe_callbacks(self, images):
        return [SpCLClustering(images)]

    def __init__(self, encoder, num_samples, num_classes=0, head=None, augmenter=None,
                 temperature=0.05, memory_momentum=0.2, probe_classes=None, **kwargs):
        kwargs.pop("views", None)
        if head is None:
            head = ProjectionHead(None, kind="none")
        super().__init__(encoder, head=head, augmenter=augmenter, views=1,
                         probe_classes=probe_classes, **kwargs)
        self.num_samples = check_int(num_samples, "num_samples", 2)
        self.num_classes = check_int(num_classes, "num_classes", 0)
        self.temperature = check_positive(temperature, "temperature")
        if isinstance(memory_momentum, bool) or not isinstance(memory_momentum, (int, float)) \
                or not 0 <= memory_momentum < 1:
            raise ValueError("`memory_momentum` must be a number in [0, 1). "
                             f"Received: memory_momentum={memory_momentum!r}")
        self.memory_momentum = float(memory_momentum)
        self.memory = None

    def build_memory(self, dim):
        if self.memory is None:
            self.memory = HybridMemory(self.num_classes, self.num_samples, dim,
                                       momentum=self.memory_momentum, name="memory")
            self.memory_ready = self.add_weight(shape=(), initializer="zeros",
                                                trainable=False, name="memory_ready")
            self.independence_threshold = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(-1.0), trainable=False,
                name="independence_threshold")

    def default_loss(self):
        return HybridMemoryLoss(self.temperature)



    def contrastive_loss(self, x, y, out, sample_weight, training):
        _, index = split_indexed(x, type(self).__name__)
        # Without labelled classes every sample is unlabelled, whatever `y` holds.
        slots = self.memory.slots(index, y if self.num_classes else None)
        values, labels = self.memory.read()
        targets = tf.gather(labels, slots)
        f = tf.cast(out["projections"][:, 0], tf.float32)
        loss = self.loss if isinstance(self.loss, HybridMemoryLoss) else self.default_loss()
        # One computation of the labels' scores for the loss and the metric.
        scores, held, check = label_scores(f, values, labels, loss.temperature)
        masked = tf.where(held[None, :], scores, float("-inf"))
        out["own_first"] = tf.equal(tf.argmax(masked, axis=1, output_type=tf.int32), targets)
        out["slots"] = slots
        return loss.reduce(loss_from_scores(targets, scores, held, check), sample_weight)

    def probe_loss(self, y, out, view=0):
        """The probe on the labelled samples only (labels >= 0)."""
        if self.probe is None or y is None:
            return None
        y = tf.reshape(tf.cast(y, tf.int64), [-1])
        labelled = tf.cast(y >= 0, tf.float32)
        logits = tf.cast(self.probe(tf.stop_gradient(out["features"][:, view])), tf.float32)
        ce = keras.losses.sparse_categorical_crossentropy(tf.maximum(y, 0), logits,
                                                          from_logits=True)
        count = tf.maximum(tf.reduce_sum(labelled), 1.0)
        loss = tf.reduce_sum(ce * labelled) / count
        correct = tf.cast(tf.equal(tf.argmax(logits, -1), y), tf.float32)
        self.probe_loss_tracker.update_state(ce, sample_weight=labelled)
        self.probe_accuracy_tracker.update_state(correct, sample_weight=labelled)
        return loss / _cross_replica.num_replicas()

    def update_metrics(self, y, out):
        self.contrastive_accuracy_tracker.update_state(tf.cast(out["own_first"], tf.float32))

    def after_step(self, y, out):
        slots = _cross_replica.all_gather(out["slots"])
        features = _cross_replica.all_gather(tf.stop_gradient(
            tf.cast(out["projections"][:, 0], tf.float32)))
        self.memory.update(slots, features)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`; warns without an `SpCLClustering` callback
        (nothing initialises the memory or clusters the unlabelled samples)."""
        callbacks = kwargs.get("callbacks") or []
        if not any(isinstance(c, SpCLClustering) for c in callbacks):
            warnings.warn(
                "SpCLModel.fit without an SpCLClustering callback: the memory keeps its "
                "random start and no unlabelled sample is clustered (each is its own class). "
                "Pass `callbacks=[supcon_tf.models.SpCLClustering(images, labels)]`.",
                stacklevel=2)
        return super().fit(*args, **kwargs)

    def embed(self, images, batch_size=1024):
        """L2-normalised embeddings `[N, dim]` of `images` (an array or a
        dataset of images, un-augmented), `training=False`."""
        data = images if isinstance(images, tf.data.Dataset) else \
            tf.data.Dataset.from_tensor_slices(np.asarray(images))
        run = tf.function(lambda x: tf.math.l2_normalize(
            self.head(self.encoder(x, training=False), training=False), axis=1))
        return np.concatenate([run(tf.cast(b, tf.float32)).numpy()
                               for b in data.batch(batch_size)])

    def initialize_memory(self, embeddings, labels=None):
        """SpCL's start: each class's centroid is the normalised mean of its
        labelled samples' embeddings, each sample's slot its embedding; the
        slots of labelled samples take no part, each unlabelled sample is its
        own label until the first clustering.

        Args:
            embeddings: `[num_samples, dim]` in index order.
            labels: `[num_samples]` class ids, -1 for unlabelled; None: all
                unlabelled.
        """
        x = np.asarray(embeddings, np.float32)
        if x.shape != (self.num_samples, self.memory.dim):
            raise ValueError(f"`embeddings` must be [{self.num_samples}, {self.memory.dim}]. "
                             f"Received: shape {x.shape}")
        y = self._labels(labels)
        values = np.array(self.memory.values.numpy())
        values[self.num_classes:] = x
        for c in range(self.num_classes):
            members = x[y == c]
            if len(members):
                mean = members.mean(axis=0)
                values[c] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        self.memory.values.assign(values)
        slot_labels = np.concatenate([np.arange(self.num_classes),
                                      self.num_classes + np.arange(self.num_samples)])
        slot_labels[self.num_classes:][y >= 0] = -1
        self.memory.assign_labels(slot_labels.astype(np.int32))
        self.memory_ready.assign(1.0)

    def _labels(self, labels):
        if labels is None:
            return np.full(self.num_samples, -1, np.int64)
        y = np.asarray(labels).reshape(-1).astype(np.int64)
        if y.shape[0] != self.num_samples or y.min(initial=0) < -1 or \
                y.max(initial=-1) >= self.num_classes:
            raise ValueError(f"`labels` must hold {self.num_samples} class ids in [0, "
                             f"{self.num_classes}) or -1 (unlabelled). Received: "
                             f"{y.shape[0]} labels in [{y.min(initial=0)}, {y.max(initial=0)}]")
        return y

    def cluster(self, labels=None, eps=0.6, eps_gap=0.02, min_samples=4, k1=30, k2=6):
        """Re-labels the unlabelled samples' slots from their features in the
        memory (`self_paced.jaccard_distance` and `self_paced_labels`).
        Returns the stats dict (`clusters`, `outliers`)."""
        y = self._labels(labels)
        unlabelled = np.flatnonzero(y < 0)
        slot_labels = np.array(self.memory.labels.numpy())
        if unlabelled.size < 2:
            return {"clusters": 0, "outliers": int(unlabelled.size)}
        features = self.memory.values.numpy()[self.num_classes + unlabelled]
        distance = self_paced.jaccard_distance(features, k1=k1, k2=k2)
        threshold = float(self.independence_threshold.numpy())
        ids, threshold, stats = self_paced.self_paced_labels(
            distance, eps=eps, eps_gap=eps_gap, min_samples=min_samples,
            independence_threshold=None if threshold < 0 else threshold)
        if threshold is not None:
            self.independence_threshold.assign(threshold)
        slot_labels[self.num_classes + unlabelled] = self.num_classes + ids
        self.memory.assign_labels(slot_labels.astype(np.int32))
        return stats

    def get_config(self):
        config = super().get_config()
        config.pop("views", None)
        config.update({"num_samples": self.num_samples, "num_classes": self.num_classes,
                       "temperature": self.temperature,
                       "memory_momentum": self.memory_momentum})
        return config


class SpCLClustering(keras.callbacks.Callback):
    """SpCL's per-epoch work: at the start of training (once per model) the
    memory from the encoder's embeddings of `images`
    (`SpCLModel.initialize_memory`); at the start of every epoch the
    unlabelled samples' self-paced pseudo labels (`SpCLModel.cluster`).

    Args:
        images: The training images in index order, un-augmented: an array
            `[num_samples, H, W, C]` or a `tf.data.Dataset` of images.
        labels: `[num_samples]` class ids, -1 for unlabelled samples, or None
            (all unlabelled). Defaults to None.
        eps: DBSCAN's radius on the Jaccard distance. Defaults to 0.6.
        eps_gap: The tight and loose radii's offset. Defaults to 0.02.
        min_samples: DBSCAN's. Defaults to 4.
        k1: The Jaccard distance's reciprocal neighbours. Defaults to 30.
        k2: Its query expansion. Defaults to 6.
        batch_size: Images per embedding batch. Defaults to 1024.

    Each epoch's logs get `clusters`, `outliers` and `clustering_seconds`.
    """

    def __init__(self, images, labels=None, eps=0.6, eps_gap=0.02, min_samples=4, k1=30,
                 k2=6, batch_size=1024):
        super().__init__()
        self.images, self.labels = images, labels
        self.eps, self.eps_gap = check_positive(eps, "eps"), check_positive(eps_gap, "eps_gap")
        if self.eps_gap >= self.eps:
            raise ValueError(f"`eps_gap` must be smaller than `eps` ({self.eps}). "
                             f"Received: eps_gap={eps_gap}")
        self.min_samples = check_int(min_samples, "min_samples", 1)
        self.k1, self.k2 = check_int(k1, "k1", 1), check_int(k2, "k2", 1)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.stats = {}

    def on_train_begin(self, logs=None):
        model = self.model
        if model.memory is None:                 # built by the images' shape
            first = next(iter(self.images.take(1))) if isinstance(
                self.images, tf.data.Dataset) else np.asarray(self.images)[0]
            model.build((None, *tuple(first.shape)))
        if float(model.memory_ready.numpy()) == 0.0:
            model.initialize_memory(model.embed(self.images, self.batch_size), self.labels)

    def on_epoch_begin(self, epoch, logs=None):
        start = time.perf_counter()
        stats = self.model.cluster(self.labels, eps=self.eps, eps_gap=self.eps_gap,
                                   min_samples=self.min_samples, k1=self.k1, k2=self.k2)
        self.stats[epoch] = {**stats, "clustering_seconds": time.perf_counter() - start}

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.stats.get(epoch, {}))
