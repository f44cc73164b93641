"""Prototypical Contrastive Learning (PCL, Li et al., ICLR 2021): MoCo's
InfoNCE plus ProtoNCE against the prototypes of k-means clusterings of the
training set, re-clustered every epoch by `PCLClustering`."""

import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from supcon_tf import _cross_replica
from supcon_tf.clustering import concentration, kmeans
from supcon_tf.losses.proto import ProtoNCELoss
from supcon_tf.models.base import check_int
from supcon_tf.models.moco import MoCoModel
from supcon_tf.models.npid import IndexedInputs, split_indexed


def _check_clusters(num_clusters, num_samples):
    try:
        values = tuple(num_clusters)
    except TypeError:
        values = None
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2
                         for v in values) or list(values) != sorted(set(values)):
        raise ValueError("`num_clusters` must be a non-empty, increasing sequence of integers "
                         f">= 2. Received: num_clusters={num_clusters!r}")
    if values[-1] > num_samples:
        raise ValueError(f"`num_clusters` asks for {values[-1]} clusters of "
                         f"num_samples={num_samples} samples.")
    return tuple(int(v) for v in values)


@keras.saving.register_keras_serializable(package="supcon_tf")
class PCLModel(IndexedInputs, MoCoModel):
    """MoCo v2 with PCL's ProtoNCE (Li et al., ICLR 2021; salesforce/PCL).

    The loss is MoCo's InfoNCE plus, once clusters exist, the mean over the
    clusterings of `supcon_tf.losses.proto_nce`: each query against its
    sample's prototype and `num_prototype_negatives` others, each prototype
    with its own temperature phi. The clusters come from `PCLClustering`, a
    callback that at the start of every epoch from `warmup_epochs` on embeds
    the training set with the momentum encoder (un-augmented images), runs
    k-means for each of `num_clusters`, and stores the normalised centroids,
    phi (`clustering.concentration`) and every sample's cluster in the
    model's variables: every replica sees the same prototypes, and `.keras`
    files and `BackupAndRestore` keep them. Before the first clustering the
    loss is InfoNCE alone (PCL's warm-up).

    Inputs are `supcon_tf.data.with_index(dataset)` (each sample's cluster is
    looked up by its index), with two views per image as MoCo.

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        num_samples: The training set's size (one cluster id per sample).
        num_clusters: Cluster counts, increasing. Defaults to (10, 20, 50).
        warmup_epochs: Epochs of InfoNCE alone before the first clustering.
            Defaults to 1.
        num_prototype_negatives: PCL's `r`. Defaults to 16000 (all the other
            prototypes when fewer).
        **kwargs: `MoCoModel`'s arguments (head, augmenter, queue_size,
            momentum, temperature, ...).

    Metrics: MoCo's, and `proto_loss` (the mean ProtoNCE term, 0 during the
    warm-up).

    Reference:
        Li et al., "Prototypical Contrastive Learning of Unsupervised
        Representations", ICLR 2021.
    """

    supports_imix = False

    method_name = "pcl"
    method_title = "Prototypical contrastive learning (PCL)"
    labels = "drop"
    indexed = True

    @classmethod
    def from_recipe(cls, encoder, head, augmenter, probe_classes, context, **args):
        """One memory slot per training example (`num_examples`); a recipe
        whose epochs do not pass `warmup_epochs` is refused (it would train
        MoCo alone)."""
        epochs, warmup = context["recipe"]["epochs"], args.get("warmup_epochs", 1)
        if epochs <= warmup:
            raise ValueError(
                f"PCL clusters from epoch warmup_epochs={warmup} on: epochs={epochs} would "
                "train MoCo alone. Train for more epochs than the warm-up (or "
                "warmup_epochs=0).")
        return cls(encoder, context["num_examples"], head=head, augmenter=augmenter,
                   **args)

    def recipe_callbacks(self, images):
        return [PCLClustering(images)]

    def __init__(self, encoder, num_samples, num_clusters=(10, 20, 50), warmup_epochs=1,
                 num_prototype_negatives=16000, **kwargs):
        self.num_samples = check_int(num_samples, "num_samples", 2)
        self.num_clusters = _check_clusters(num_clusters, self.num_samples)
        self.warmup_epochs = check_int(warmup_epochs, "warmup_epochs", 0)
        self.num_prototype_negatives = check_int(num_prototype_negatives,
                                                 "num_prototype_negatives", 1)
        self.proto_nce = ProtoNCELoss(self.num_prototype_negatives)
        self.prototypes = None
        # Before MoCoModel's constructor, which builds the model when it can.
        self.proto_loss_tracker = keras.metrics.Mean(name="proto_loss")
        super().__init__(encoder, **kwargs)

    def build_memory(self, dim):
        if self.prototypes is None:
            self.prototypes = [self.add_weight(shape=(k, dim), initializer="zeros",
                                               trainable=False, name=f"prototypes_{k}")
                               for k in self.num_clusters]
            self.phi = [self.add_weight(shape=(k,), initializer="ones", trainable=False,
                                        name=f"phi_{k}") for k in self.num_clusters]
            self.cluster_ids = [self.add_weight(shape=(self.num_samples,), initializer="zeros",
                                                dtype="int32", trainable=False,
                                                name=f"cluster_ids_{k}")
                                for k in self.num_clusters]
            self.clustered = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                             name="clustered")

    def contrastive_loss(self, x, y, out, sample_weight, training):
        info_nce = super().contrastive_loss(x, y, out, sample_weight, training)
        _, index = split_indexed(x, type(self).__name__)
        index = tf.reshape(tf.cast(index, tf.int32), [-1])
        with tf.control_dependencies([tf.debugging.assert_less(
                index, self.num_samples, message="PCLModel: a sample index >= num_samples: "
                "num_samples must be the size of the dataset fed through with_index")]):
            index = tf.identity(index)
        queries = tf.cast(out["projections"][:, 0], tf.float32)
        step = tf.cast(self.optimizer.iterations, tf.int64)
        # Each term as Keras scales a compiled loss (for the replicas' sum).
        terms = [self.proto_nce(tf.gather(ids, index), queries, sample_weight=sample_weight,
                                centroids=c, phi=phi,
                                seed=tf.stack([step, tf.constant(m, tf.int64)]))
                 for m, (c, phi, ids) in enumerate(zip(self.prototypes, self.phi,
                                                       self.cluster_ids))]
        proto = tf.add_n(terms) / len(terms)
        proto *= tf.cast(self.clustered, tf.float32)            # 0 until the first clustering
        self.proto_loss_tracker.update_state(proto * _cross_replica.num_replicas())
        return info_nce + proto

    def _own_metrics(self):
        return super()._own_metrics() + [self.proto_loss_tracker]

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`; warns when this call would be MoCo alone: no
        `PCLClustering` among the callbacks, or no epoch past the warm-up."""
        callbacks = kwargs.get("callbacks") or []
        epochs = kwargs.get("epochs", args[3] if len(args) > 3 else 1)
        if not any(isinstance(c, PCLClustering) for c in callbacks):
            warnings.warn(
                "PCLModel.fit without a PCLClustering callback: nothing clusters the "
                "embeddings, so `proto_loss` stays 0 and this trains MoCo. Pass "
                "`callbacks=[supcon_tf.models.PCLClustering(images)]`.", stacklevel=2)
        elif epochs <= self.warmup_epochs and not bool(self.clustered.numpy()):
            warnings.warn(
                f"PCLModel.fit with epochs={epochs} and warmup_epochs={self.warmup_epochs}: "
                "the first clustering comes at epoch warmup_epochs, so this call trains "
                "MoCo alone (`proto_loss` 0). Train for more epochs than the warm-up.",
                stacklevel=2)
        return super().fit(*args, **kwargs)

    def set_clusters(self, embeddings, seed=0, restarts=3):
        """Clusters `embeddings [num_samples, dim]` (the momentum encoder's, in
        index order) for every count of `num_clusters` and stores the
        normalised centroids, phi and the assignments. Returns the seconds."""
        start = time.perf_counter()
        x = np.asarray(embeddings, np.float32)
        if x.shape[0] != self.num_samples:
            raise ValueError(f"PCLModel has num_samples={self.num_samples}; the clustering "
                             f"got {x.shape[0]} embeddings.")
        for k, c_var, phi_var, ids_var in zip(self.num_clusters, self.prototypes, self.phi,
                                              self.cluster_ids):
            centroids, ids, _ = kmeans(x, k, restarts=restarts, seed=seed)
            # phi's scale: the temperature of the compiled InfoNCE.
            phi = concentration(x, ids, centroids, temperature=getattr(
                self.loss_object(), "temperature", self.temperature))
            centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1,
                                                              keepdims=True), 1e-12)
            c_var.assign(centroids.astype(np.float32))
            phi_var.assign(phi)
            ids_var.assign(ids.astype(np.int32))
        self.clustered.assign(1.0)
        return time.perf_counter() - start

    def get_config(self):
        return {**super().get_config(), "num_samples": self.num_samples,
                "num_clusters": list(self.num_clusters), "warmup_epochs": self.warmup_epochs,
                "num_prototype_negatives": self.num_prototype_negatives}


class PCLClustering(keras.callbacks.Callback):
    """PCL's E-step: at the start of every epoch from the model's
    `warmup_epochs` on, embeds `images` with the momentum encoder and head
    (`training=False`) and calls `PCLModel.set_clusters`.

    Args:
        images: The training images in index order, un-augmented: an array
            `[num_samples, H, W, C]` or a `tf.data.Dataset` of images (e.g.
            `data.load(...).map(lambda x, y: x)`, the dataset given to
            `with_index`, before shuffling).
        batch_size: Images per embedding batch. Defaults to 1024.

    Attributes:
        seconds: The time each clustering took (embedding included), by epoch.

    Each epoch's logs also get `clustering_seconds` (0 during the warm-up),
    so `History` and anything that records the logs keep the time the
    E-step adds to the epoch.
    """

    def __init__(self, images, batch_size=1024):
        super().__init__()
        self.images = images
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.seconds = {}

    def on_epoch_begin(self, epoch, logs=None):
        model = self.model
        if epoch < model.warmup_epochs:
            return
        start = time.perf_counter()
        data = self.images
        if not isinstance(data, tf.data.Dataset):
            data = tf.data.Dataset.from_tensor_slices(np.asarray(data))
        embed = tf.function(lambda x: model.target_head(
            model.target_encoder(x, training=False), training=False))
        embeddings = np.concatenate([embed(tf.cast(b, tf.float32)).numpy()
                                     for b in data.batch(self.batch_size)])
        model.set_clusters(embeddings, seed=epoch)
        self.seconds[epoch] = time.perf_counter() - start

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["clustering_seconds"] = self.seconds.get(epoch, 0.0)
