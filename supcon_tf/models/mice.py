"""MiCE (Tsai, Wu, Zhu, ICLR 2021): a mixture of contrastive experts for
image clustering: a gate over K experts, each an InfoNCE against a
momentum encoder's queue, trained by EM on the ELBO."""

import keras
import numpy as np
import tensorflow as tf

from supcon_tf import _cross_replica
from supcon_tf._checks import check_int, check_positive
from supcon_tf.heads import MixtureHead
from supcon_tf.losses.mice import (MiCELoss, mice_log_terms, mice_posterior, negative_elbo,
                                   simplex_prototypes)
from supcon_tf.models.base import LossReadsState
from supcon_tf.models.moco import MoCoModel


@keras.saving.register_keras_serializable(package="supcon_tf")
class MiCEModel(LossReadsState, MoCoModel):
    """MiCE: K contrastive experts and a gate; the clustering is the posterior.

    Three views of each image: the experts embed view 0 (`f_k`, online
    network), the momentum network's experts view 1 (the keys `v_k`), the
    gate view 2 (`g`); the heads are one `heads.MixtureHead`. The gate's
    prototypes `omega` are fixed (`losses.simplex_prototypes`: K unit
    vectors at equal angles); the experts' prototypes `mu` are trained with
    the network and, at the start of every epoch, replaced by the normalised
    sum of the previous epoch's keys of the images each expert won (argmax
    of the posterior: the official code's analytic update, Eq. 13; an expert
    that won none keeps its `mu`). The loss is `losses.MiCELoss` (the
    negative ELBO; the E-step's posterior computed in it, the M-step its
    gradient) against a queue of past keys, as MoCo's; shuffle-BN as
    `MoCoModel`.

    `cluster(images)` assigns images (un-augmented) to experts: the argmax
    of the posterior with the keys of the momentum network on the same
    images (as the official evaluation does) and, beside it, the gate's
    argmax alone.

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        num_experts: K, the clusters. Defaults to 10.
        head: A `heads.MixtureHead` with `num_experts`, or None: one with
            `dim` 128.
        augmenter: A Keras layer making each view. Defaults to None (views
            `[batch, 3, H, W, C]` from the pipeline).
        views: Must be 3. Defaults to 3.
        queue_size: Keys in the queue. Defaults to 16384 (the official nu).
        momentum: The momentum network's. Defaults to 0.999 (the official m).
        temperature: tau. Defaults to 1.0 (the official's).
        kappa: The gate's temperature. Defaults to 1.0 (the official's).
        bn_groups, probe_classes, momentum_schedule: As `MoCoModel`.

    Metrics: `loss`, `contrastive_accuracy` (how often the positive key
    outscores every queue key for the posterior's expert), `output_std`,
    `expert_share` (the largest share of a batch one expert wins: 1/K when
    balanced, 1 when one expert takes all), the probe's.

    Reference:
        Tsai, Wu, Zhu, "MiCE: Mixture of Contrastive Experts for Unsupervised
        Image Clustering", ICLR 2021.
    """

    supports_imix = False
    own_loss = MiCELoss
    own_loss_reads = "its experts, gate and queue"
    method_name = "mice"
    method_title = "Mixture of contrastive experts (MiCE)"
    labels = "drop"
    expected_views = 3

    @classmethod
    def from_recipe(cls, encoder, head, augmenter, probe_classes, context, **args):
        """The recipe's head size becomes each expert's (`MixtureHead`)."""
        num_experts = args.pop("num_experts", 10)
        dim = getattr(head, "output_dim", None) or 128
        return cls(encoder, num_experts=num_experts, head=MixtureHead(num_experts, dim),
                   augmenter=augmenter, probe_classes=probe_classes, **args)

    def __init__(self, encoder, num_experts=10, head=None, augmenter=None, views=3,
                 queue_size=16384, momentum=0.999, temperature=1.0, kappa=1.0, bn_groups=2,
                 probe_classes=None, momentum_schedule="constant", **kwargs):
        for option in ("mochi_n", "symmetric"):
            if kwargs.get(option):
                raise ValueError(f"MiCEModel does not take `{option}` (MoCo's option). "
                                 f"Received: {option}={kwargs[option]!r}")
        self.num_experts = check_int(num_experts, "num_experts", 2)
        if head is None:
            head = MixtureHead(self.num_experts, 128)
        if not isinstance(head, MixtureHead) or head.num_experts != self.num_experts:
            raise ValueError(f"MiCEModel's head must be a MixtureHead with num_experts="
                             f"{self.num_experts}. Received: head={head!r}")
        self.kappa = check_positive(kappa, "kappa")
        self.expert_share_tracker = keras.metrics.Mean(name="expert_share")
        self.expert_prototypes = None
        super().__init__(encoder, head=head, augmenter=augmenter, views=views,
                         queue_size=queue_size, momentum=momentum, temperature=temperature,
                         bn_groups=bn_groups, probe_classes=probe_classes,
                         momentum_schedule=momentum_schedule, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        if self.expert_prototypes is None:
            k, d = self.num_experts, self.head.dim
            self.gating_prototypes = self.add_weight(
                shape=(k, d), trainable=False, name="gating_prototypes",
                initializer=lambda shape, dtype=None: tf.constant(simplex_prototypes(k, d)))
            self.expert_prototypes = self.add_weight(
                shape=(k, d), name="expert_prototypes",
                initializer=lambda shape, dtype=None: tf.math.l2_normalize(
                    keras.random.normal(shape, seed=0), axis=1))
            self.center_sums = self.add_weight(shape=(k, d), initializer="zeros",
                                               trainable=False, name="center_sums")

    def default_loss(self):
        return MiCELoss(self.temperature, self.kappa)



    def forward(self, views, training):
        online = tf.stack([views[:, 0], views[:, 2]], axis=1)
        features, projections = self._grouped(online, training, self.encoder, self.head)
        keys, global_keys = self._keys(views[:, 1:2], training)
        return {"features": features[:, :1], "projections": projections[:, :1],
                "gate_projections": projections[:, 1:], "keys": keys,
                "global_keys": global_keys}

    def _inputs(self, out):
        """The loss's inputs from the networks' outputs and the queue."""
        f, _ = self.head.split(tf.cast(out["projections"][:, 0], tf.float32))
        _, g = self.head.split(tf.cast(out["gate_projections"][:, 0], tf.float32))
        v, _ = self.head.split(tf.cast(out["keys"][:, 0], tf.float32))
        u, _ = self.head.split(self.queue.read()[0])
        return f, {"keys": v, "gating": g, "gating_prototypes": self.gating_prototypes,
                   "expert_prototypes": self.expert_prototypes, "queue": u}

    def contrastive_loss(self, x, y, out, sample_weight, training):
        """The negative ELBO, reduced as the compiled `MiCELoss` reduces it,
        from one computation of the terms that also give the posterior (the
        prototypes' update) and the metric."""
        f, inputs = self._inputs(out)
        loss = self.loss if isinstance(self.loss, MiCELoss) else self.default_loss()
        log_pi, log_phi, positive, best = mice_log_terms(
            f, temperature=loss.temperature, kappa=loss.kappa, with_scores=True, **inputs)
        posterior = tf.stop_gradient(mice_posterior(log_pi, log_phi))
        winner = tf.argmax(posterior, axis=1, output_type=tf.int32)
        out["posterior"], out["expert_keys"], out["winner"] = posterior, inputs["keys"], winner
        out["positive_first"] = (tf.gather(positive, winner, batch_dims=1)
                                 > tf.gather(best, winner, batch_dims=1))
        return loss.reduce(negative_elbo(log_pi, log_phi), sample_weight)

    def update_metrics(self, y, out):
        self.contrastive_accuracy_tracker.update_state(
            tf.cast(out["positive_first"], tf.float32))
        wins = tf.reduce_sum(tf.one_hot(out["winner"], self.num_experts), axis=0)
        self.expert_share_tracker.update_state(
            tf.reduce_max(wins) / tf.maximum(tf.reduce_sum(wins), 1.0))

    def _own_metrics(self):
        return super()._own_metrics() + [self.expert_share_tracker]

    def after_step(self, y, out):
        super().after_step(y, out)                # EMA, then the keys into the queue
        winners = tf.one_hot(_cross_replica.all_gather(out["winner"]), self.num_experts)
        keys = _cross_replica.all_gather(out["expert_keys"])
        _cross_replica.assign([(self.center_sums, tf.convert_to_tensor(self.center_sums)
                                + tf.einsum("bk,bkd->kd", winners, keys))])

    def update_prototypes(self):
        """The analytic M-step for `mu`: each expert's prototype becomes the
        normalised sum of the keys it won since the last update (kept when it
        won none); the sums restart. `fit` calls it at the start of every
        epoch and at the end of training."""
        sums = self.center_sums.numpy()
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        if not np.any(norms > 0):
            return
        mu = self.expert_prototypes.numpy()
        won = norms[:, 0] > 0
        mu[won] = sums[won] / norms[won]
        self.expert_prototypes.assign(mu)
        self.center_sums.assign(np.zeros_like(sums))

    def fit(self, *args, **kwargs):
        callbacks = list(kwargs.pop("callbacks", None) or [])
        # First, so a backup written at an epoch's end holds the sums.
        return super().fit(*args, callbacks=[_PrototypeUpdate()] + callbacks, **kwargs)

    def cluster(self, images, batch_size=512):
        """`(posterior clusters, gate clusters)`: each image's expert by the
        posterior (online experts and gate, momentum keys, the queue, all on
        the same un-augmented image) and by the gate alone; int64 `[N]` each."""
        data = images if isinstance(images, tf.data.Dataset) else \
            tf.data.Dataset.from_tensor_slices(np.asarray(images))
        queue = self.head.split(self.queue.read()[0])[0]

        @tf.function
        def assign(x):
            x = tf.cast(x, tf.float32)
            f, g = self.head.split(self.head(self.encoder(x, training=False)))
            v, _ = self.head.split(self.target_head(self.target_encoder(x, training=False)))
            log_pi, log_phi = mice_log_terms(f, v, g, self.gating_prototypes,
                                             self.expert_prototypes, queue,
                                             self.temperature, self.kappa)
            return tf.argmax(log_pi + log_phi, axis=1), tf.argmax(log_pi, axis=1)

        parts = [assign(b) for b in data.batch(batch_size)]
        return (np.concatenate([p[0].numpy() for p in parts]),
                np.concatenate([p[1].numpy() for p in parts]))

    def get_config(self):
        config = super().get_config()
        for key in ("mochi_n", "mochi_s", "mochi_s_prime", "mochi_start_epoch", "symmetric"):
            config.pop(key, None)
        config.update({"num_experts": self.num_experts, "kappa": self.kappa})
        return config


class _PrototypeUpdate(keras.callbacks.Callback):
    """`MiCEModel.update_prototypes` at the start of every epoch (the sums
    of the epoch before, also after a resume: they are in the backup) and at
    the end of training."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.update_prototypes()

    def on_train_end(self, logs=None):
        self.model.update_prototypes()
