"""SwAV (Caron et al., NeurIPS 2020): each view's code, an equal-partition
assignment of the batch to learnable prototypes (Sinkhorn-Knopp), is
predicted from the other views."""

import keras
import tensorflow as tf

from supcon_tf import _cross_replica, augment
from supcon_tf.augment import MultiView
from supcon_tf.clustering import sinkhorn
from supcon_tf.losses import SwAVLoss
from supcon_tf._checks import check_positive
from supcon_tf.memory import FeatureQueue
from supcon_tf.models.base import (ContrastiveModel, LossReadsState, check_int,
                                   check_two_views, feature_shape)
from supcon_tf.heads import swav_projector
from supcon_tf.memory import Prototypes
from supcon_tf._serialization import from_config_with_objects, serialize

# The views whose codes are predicted (SwAV's `crops_for_assign`): the two large ones.
CODED_VIEWS = 2


@keras.saving.register_keras_serializable(package="supcon_tf")
class SwAVModel(LossReadsState, ContrastiveModel):
    """SwAV: swapped prediction of Sinkhorn codes over learnable prototypes.

    Every view is embedded (encoder, `head`, L2-normalised) and scored against
    `num_prototypes` unit-norm prototypes (`layers.Prototypes`). For each of
    the two large views the scores of the (global) batch are turned into codes
    by `clustering.sinkhorn` (`sinkhorn_iterations`, `epsilon`): a soft
    assignment of the batch that spreads it evenly over the prototypes. Each
    code is then predicted from every other view,
    `-sum_k q_k log softmax(scores / temperature)_k` (`SwAVLoss`), averaged
    as in facebookresearch/swav. After every optimizer step the prototypes
    are renormalised to unit norm; for the first `freeze_prototypes_steps`
    steps they get no gradient (SwAV's `freeze_prototypes_niters`).

    Multi-crop: with `small_views > 0` each image also gives that many small
    crops by `small_augmenter` (e.g. `augment.RandomResizedCrop(14, 14,
    scale=(0.05, 0.3))`), which are scored and predict the codes of the large
    views but get no code of their own, as in SwAV. The encoder must accept
    both sizes (`encoders.resnet18((None, None, C))`).

    Queue: with `queue_size > 0`, the embeddings of the large views of recent
    batches are kept (one `FeatureQueue` per coded view) and, from epoch
    `queue_start_epoch` on and once a queue is full, they join the batch in
    the Sinkhorn step (scored against the current prototypes), which makes
    the equal partition meaningful for small batches; only the batch's codes
    are used. The queues fill from the first step, so they are full at the
    start epoch (SwAV creates them at that epoch and waits until they fill).

    Under `tf.distribute` the codes are those of the global batch (and
    queue), the same as one device computes: each replica gathers the
    batch's scores, runs Sinkhorn on all of them and keeps its own rows.
    No labels are used (they feed only the online probe).

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        head: The projection head, L2-normalised. Defaults to None:
            `layers.swav_projector()` (2048 -> 128; scale it to small encoders).
        augmenter: A Keras layer making each large view, or None (views from
            the pipeline, `[batch, 2, H, W, C]`). Defaults to None.
        views: Large views; must be 2. Defaults to 2.
        num_prototypes: `K`, >= 2. Defaults to 3000.
        temperature: Of the predictions, > 0. Defaults to 0.1.
        epsilon: Sinkhorn's entropy regularisation, > 0. Defaults to 0.05.
        sinkhorn_iterations: >= 1. Defaults to 3.
        queue_size: Embeddings per coded view in the queue, >= 0 (0: no
            queue). Defaults to 0.
        queue_start_epoch: The epoch (0-based) from which the queue joins
            the Sinkhorn step. Needs the steps per epoch of `fit` when > 0.
            Defaults to 0.
        freeze_prototypes_steps: Optimizer steps without prototype updates,
            >= 0. Defaults to 313 (SwAV's).
        small_augmenter: A Keras layer making each small crop, or None.
        small_views: Small crops per image, >= 0. Defaults to 0.
        prototype_seed: Seed of the initial prototypes, or None.
        probe_classes: Classes of an online linear probe, or None.

    Metrics: `loss`, `contrastive_accuracy` (of the two large views'
    embeddings), `output_std`, `code_entropy` (the entropy of the batch's mean
    code over the prototypes, `log K` when the batch is spread evenly, 0
    when everything goes to one prototype) and the probe's.

    Reference:
        Caron et al., "Unsupervised Learning of Visual Features by Contrasting
        Cluster Assignments", NeurIPS 2020.
    """

    supports_imix = False          # the codes are a statistic of the whole batch
    own_loss = SwAVLoss
    own_loss_reads = "its Sinkhorn codes"
    method_name = "swav"
    method_title = "Swapping assignments between views (SwAV)"
    labels = "probe"

    @classmethod
    def from_recipe(cls, encoder, head, augmenter, probe_classes, context,
                    small_crop_size=14, small_crop_scale=(0.05, 0.3), **args):
        """With `small_views` in the recipe's `model`, multi-crop's small
        crops are the recipe's augmentation at `small_crop_size` pixels and
        `small_crop_scale` of the area."""
        if args.get("small_views"):
            shape = (small_crop_size, small_crop_size, context["image_shape"][-1])
            args["small_augmenter"] = augment.from_spec(
                context["recipe"]["augment"], shape, seed=context["recipe"]["seed"] + 1,
                crop_scale=tuple(small_crop_scale))
        return cls(encoder, head=head, augmenter=augmenter, probe_classes=probe_classes,
                   **args)

    @classmethod
    def encoder_shape(cls, image_shape, args):
        """Multi-crop feeds two image sizes: the encoder takes any size."""
        if args.get("small_views"):
            return (None, None, image_shape[-1])
        return tuple(image_shape)

    def __init__(self, encoder, head=None, augmenter=None, views=2, num_prototypes=3000,
                 temperature=0.1, epsilon=0.05, sinkhorn_iterations=3, queue_size=0,
                 queue_start_epoch=0, freeze_prototypes_steps=313, small_augmenter=None,
                 small_views=0, prototype_seed=None, probe_classes=None, **kwargs):
        check_two_views("SwAVModel", views)
        head = head if head is not None else swav_projector()
        self.small_views = check_int(small_views, "small_views", 0)
        if (self.small_views > 0) != (small_augmenter is not None):
            raise ValueError("Multi-crop needs both `small_views` > 0 and a `small_augmenter`. "
                             f"Received: small_views={small_views!r}, "
                             f"small_augmenter={small_augmenter!r}")
        if self.small_views and kwargs.get("adversarial_eps", 0):
            raise ValueError("SwAVModel's adversarial views work without small crops. "
                             f"Received: small_views={small_views}, "
                             f"adversarial_eps={kwargs['adversarial_eps']}")
        self.code_entropy_tracker = keras.metrics.Mean(name="code_entropy")
        super().__init__(encoder, head=head, augmenter=augmenter, views=views,
                         probe_classes=probe_classes, **kwargs)
        self.prototypes = Prototypes(num_prototypes, seed=prototype_seed, name="prototypes")
        self.num_prototypes = self.prototypes.num_prototypes
        self.prototype_seed = prototype_seed
        self.temperature = check_positive(temperature, "temperature")
        self.epsilon = check_positive(epsilon, "epsilon")
        self.sinkhorn_iterations = check_int(sinkhorn_iterations, "sinkhorn_iterations", 1)
        self.queue_size = check_int(queue_size, "queue_size", 0)
        self.queue_start_epoch = check_int(queue_start_epoch, "queue_start_epoch", 0)
        self.freeze_prototypes_steps = check_int(freeze_prototypes_steps,
                                                 "freeze_prototypes_steps", 0)
        self.small_augmenter = small_augmenter
        self.small_multi_view = (MultiView(small_augmenter, self.small_views, name="small_crops")
                                 if self.small_views else None)
        self.queues = None
        self.queue_start_step = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                                trainable=False, name="queue_start_step")

    def default_loss(self):
        """`SwAVLoss(temperature)`; a compiled `SwAVLoss` replaces it."""
        return SwAVLoss(self.temperature)



    def build(self, input_shape):
        super().build(input_shape)
        dim = self.head.compute_output_shape(feature_shape(self.encoder, input_shape))[-1]
        if not self.prototypes.built:
            self.prototypes.build((None, dim))
        if self.queues is None and self.queue_size:
            self.queues = [FeatureQueue(self.queue_size, dim, name=f"queue_{v}")
                           for v in range(CODED_VIEWS)]

    def on_fit_begin(self, epochs, steps_per_epoch, initial_epoch=0):
        super().on_fit_begin(epochs, steps_per_epoch, initial_epoch)
        if self.prototypes.built:           # (they start as unit vectors)
            self.prototypes.kernel.assign(self.prototypes.unit_kernel())
        if self.queue_size and self.queue_start_epoch > 0:
            if not steps_per_epoch:
                raise ValueError(
                    f"queue_start_epoch={self.queue_start_epoch} needs the steps per epoch: "
                    "pass `steps_per_epoch` to fit, or a dataset of known cardinality.")
            self.queue_start_step.assign(self.fit_start_step(initial_epoch, steps_per_epoch)
                                         + self.queue_start_epoch * int(steps_per_epoch))

    # -- views and networks ------------------------------------------------------------

    def make_views(self, x):
        large = super().make_views(x)
        if self.small_multi_view is None:
            return large
        if tf.convert_to_tensor(x).shape.rank != 4:
            raise ValueError("SwAVModel's small crops are made from the images: feed images "
                             "[batch, H, W, C], not views. Received: x.shape="
                             f"{tf.convert_to_tensor(x).shape}")
        return {"large": large, "small": self.small_multi_view(x, training=True)}

    def _gradient(self, training):
        """1 once the prototypes may learn, 0 while they are frozen."""
        if not training or self.freeze_prototypes_steps == 0:
            return 1.0
        return tf.cast(self.optimizer.iterations >= self.freeze_prototypes_steps, tf.float32)

    def forward(self, views, training):
        small = None
        if isinstance(views, dict):
            views, small = views["large"], views["small"]
        features, projections = self.encode(views, training)
        embeddings = projections
        if small is not None:
            _, small_projections = self.encode(small, training)
            embeddings = tf.concat([projections, tf.cast(small_projections, projections.dtype)],
                                   axis=1)
        scores = self.prototypes(embeddings, gradient=self._gradient(training))
        return {"features": features, "projections": projections,
                "scores": tf.cast(scores, tf.float32)}

    # -- the loss --------------------------------------------------------------------------

    def _codes(self, everyone, offset, b, view):
        """Sinkhorn codes of `view` over the global batch's scores `everyone`
        `[B, K]` (and the queue, when it is used): `(this replica's rows
        [b, K], the batch's rows [B, K])`."""

        def codes_of(rows, first):
            codes = sinkhorn(rows, self.sinkhorn_iterations, self.epsilon, across_replicas=False)
            return codes[first:]

        if self.queues is None:
            batch = codes_of(everyone, 0)
        else:
            queue = self.queues[view]
            use = tf.logical_and(
                tf.equal(tf.convert_to_tensor(queue.count), self.queue_size),
                self.optimizer.iterations >= tf.convert_to_tensor(self.queue_start_step))

            def with_queue():
                kernel = tf.cast(self.prototypes.unit_kernel(), tf.float32)
                queued = tf.matmul(tf.cast(queue.read()[0], tf.float32), kernel)
                return codes_of(tf.concat([queued, everyone], axis=0), self.queue_size)

            batch = tf.cond(use, with_queue, lambda: codes_of(everyone, 0))
        return batch[offset:offset + b], batch

    def contrastive_loss(self, x, y, out, sample_weight, training):
        scores = out["scores"]
        # One gather of the coded views' scores for the whole step.
        everyone, offset = _cross_replica.global_batch(scores[:, :CODED_VIEWS])
        b = tf.shape(scores)[0]
        codes = [self._codes(everyone[:, v], offset, b, v) for v in range(CODED_VIEWS)]
        out["batch_codes"] = codes[0][1]                       # for code_entropy
        codes = tf.stack([local for local, _ in codes], axis=1)
        loss = self.loss if isinstance(self.loss, SwAVLoss) else self.default_loss()
        return loss(codes, scores, sample_weight=sample_weight)

    def update_metrics(self, y, out):
        super().update_metrics(y, out)
        if "batch_codes" in out:
            mean_code = tf.reduce_mean(out["batch_codes"], axis=0)
            mean_code /= tf.reduce_sum(mean_code)
            self.code_entropy_tracker.update_state(
                -tf.reduce_sum(mean_code * tf.math.log(mean_code + 1e-12)))

    def after_step(self, y, out):
        _cross_replica.assign([(self.prototypes.kernel, self.prototypes.unit_kernel())])
        if self.queues is not None:
            embeddings = _cross_replica.all_gather(
                tf.stop_gradient(tf.cast(out["projections"], tf.float32)))
            for view, queue in enumerate(self.queues):
                queue.enqueue(embeddings[:, view])

    def _own_metrics(self):
        return super()._own_metrics() + [self.code_entropy_tracker]

    def get_config(self):
        return {**super().get_config(), "num_prototypes": self.num_prototypes,
                "temperature": self.temperature, "epsilon": self.epsilon,
                "sinkhorn_iterations": self.sinkhorn_iterations,
                "queue_size": self.queue_size, "queue_start_epoch": self.queue_start_epoch,
                "freeze_prototypes_steps": self.freeze_prototypes_steps,
                "small_augmenter": serialize(self.small_augmenter),
                "small_views": self.small_views, "prototype_seed": self.prototype_seed}

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config,
                                        ["encoder", "head", "augmenter", "small_augmenter"])
