"""BYOL and SimSiam: an online network with a predictor regresses the
projection of the other view, with no negatives. BYOL's targets come from a
momentum copy of the network; SimSiam's from the same network, through a
stop-gradient."""

import keras
import tensorflow as tf

from supcon_tf._serialization import from_config_with_objects, serialize
from supcon_tf.heads import (byol_predictor, byol_projector, simsiam_predictor,
                              simsiam_projector)
from supcon_tf.losses import BYOLLoss
from supcon_tf.models.base import (ContrastiveModel, check_two_views,
                                   feature_shape)
from supcon_tf.models.momentum_model import MomentumModel
from supcon_tf.optimizers import with_learning_rate


def _predictor_for(head, factory):
    """The method's default predictor, sized to `head`'s output."""
    dim = getattr(head, "output_dim", None)
    if not isinstance(dim, int):
        raise ValueError("Pass `predictor=`: the default predictor is sized from the "
                         f"head's `output_dim`, which {type(head).__name__} does not have.")
    return factory(output_dim=dim, synchronized_bn=getattr(head, "synchronized_bn", False))


class _Predicting:
    """What BYOL and SimSiam share: the predictor on the online projections,
    and the symmetric loss `loss(target of view 1, prediction of view 0) +
    loss(target of view 0, prediction of view 1)`, each direction weighted by
    `direction_weight`."""

    direction_weight = 1.0
    labels = "probe"
    head_options = {"normalize": False}
    predictor_factory = None

    @classmethod
    def from_recipe(cls, encoder, head, augmenter, probe_classes, context,
                    predictor_hidden_dim=None, **args):
        """A recipe's `model` may hold `predictor_hidden_dim`, the predictor's
        hidden width (default: BYOL, the projector's first hidden layer or
        4096; SimSiam, the projection's size / 4)."""
        hidden = predictor_hidden_dim or cls.default_predictor_hidden(head)
        predictor = cls.predictor_factory(head.output_dim, hidden,
                                          synchronized_bn=context["synchronized_bn"])
        return cls(encoder, head=head, predictor=predictor, augmenter=augmenter,
                   probe_classes=probe_classes, **args)

    def __init__(self, *args, predictor_learning_rate=None, **kwargs):
        super().__init__(*args, **kwargs)
        if predictor_learning_rate is not None:
            if (isinstance(predictor_learning_rate, bool)
                    or not isinstance(predictor_learning_rate, (int, float))):
                raise TypeError("`predictor_learning_rate` must be a number or None. "
                                f"Received: predictor_learning_rate={predictor_learning_rate!r}")
            if not predictor_learning_rate > 0:
                raise ValueError("`predictor_learning_rate` must be > 0. "
                                 f"Received: predictor_learning_rate={predictor_learning_rate}")
            predictor_learning_rate = float(predictor_learning_rate)
        self.predictor_learning_rate = predictor_learning_rate
        self.predictor_optimizer = None

    def build(self, input_shape):
        super().build(input_shape)
        if not self.predictor.built:
            self.predictor.build(self.head.compute_output_shape(
                feature_shape(self.encoder, input_shape)))

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        """As `ContrastiveModel.compile`; with `predictor_learning_rate`, the
        predictor gets its own optimizer: the compiled one's class and
        settings at that constant rate (`optimizers.with_learning_rate`)."""
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        self.predictor_optimizer = None
        if self.predictor_learning_rate is not None:
            with self.distribute_strategy.scope():
                self.predictor_optimizer = with_learning_rate(
                    self.optimizer, self.predictor_learning_rate,
                    name=f"{self.optimizer.name}_predictor")
            self._build_predictor_optimizer()

    def _build_predictor_optimizer(self):
        # Built before any weights load into it (`.keras`, BackupAndRestore).
        if (self.predictor_optimizer is not None and not self.predictor_optimizer.built
                and self.predictor.built):
            with self.distribute_strategy.scope():
                self.predictor_optimizer.build(self.predictor.trainable_variables)

    def fit(self, *args, **kwargs):
        self._build_predictor_optimizer()
        return super().fit(*args, **kwargs)

    def apply_gradients(self, grads_and_vars):
        """With a predictor optimizer, the predictor's gradients go to it and
        the rest to the compiled optimizer."""
        if self.predictor_optimizer is None:
            return super().apply_gradients(grads_and_vars)
        own = {id(v) for v in self.predictor.trainable_variables}
        self.predictor_optimizer.apply_gradients(
            [(g, v) for g, v in grads_and_vars if id(v) in own])
        super().apply_gradients([(g, v) for g, v in grads_and_vars if id(v) not in own])

    def predict_views(self, projections, training):
        return self.predictor(projections, training=training)

    def partners_permuted(self, out, order):
        """i-Mix: view 1's target and prediction of sample `order[i]` in row i."""
        def permuted(t):
            return tf.concat([t[:, :1], tf.gather(t[:, 1:], order)], axis=1)
        return {**out, "targets": permuted(out["targets"]),
                "predictions": permuted(out["predictions"])}

    def contrastive_loss(self, x, y, out, sample_weight, training):
        targets, predictions = out["targets"], out["predictions"]
        total = 0.0
        for view in (0, 1):
            total += self.loss(targets[:, 1 - view], predictions[:, view],
                               sample_weight=sample_weight)
        return self.direction_weight * total

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss compares predictions with targets, which
        `contrastive_loss` passes to it, not the model's output with labels.
        Keras calls this once on symbolic labels and outputs to build its loss
        state; here that builds it on the outputs against themselves."""
        return super().compute_loss(x=x, y=y_pred, y_pred=y_pred, training=training)

    def get_config(self):
        return {**super().get_config(), "predictor": serialize(self.predictor),
                "predictor_learning_rate": self.predictor_learning_rate}

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config,
                                        ["encoder", "head", "augmenter", "predictor"])


@keras.saving.register_keras_serializable(package="supcon_tf")
class BYOLModel(_Predicting, MomentumModel):
    """BYOL: the online network (encoder, projector `head`, `predictor`)
    predicts the target network's projection of the other view.

    The target network (encoder and projector) is the online one's EMA with
    BYOL's cosine momentum schedule, `m` rising from `momentum` (0.99) to 1
    over the steps of `fit` (`MomentumModel`). The loss is symmetric: for
    each view, `BYOLLoss` (`2 - 2 cos`) between the prediction from that view
    and the target projection of the other, summed over the two directions
    (so it lies in [0, 8]). Targets get no gradient. Labels, when given, feed
    only the online probe. `fit` needs a known number of steps (a dataset of
    known cardinality, arrays, or `steps_per_epoch`) for the cosine schedule.

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        head: The projector. Defaults to None: `layers.byol_projector()`
            (4096 -> 256; scale it to small encoders).
        predictor: Defaults to None: `layers.byol_predictor` with the
            projector's output size and a 4096-wide hidden layer.
        augmenter: A Keras layer making each view, or None (views from the
            pipeline, `[batch, 2, H, W, C]`). Defaults to None.
        views: Must be 2. Defaults to 2.
        momentum: Base momentum of the target network. Defaults to 0.99.
        momentum_schedule: `"cosine"` (BYOL) or `"constant"`. Defaults to `"cosine"`.
        probe_classes: Classes of an online linear probe, or None. Defaults to None.
        predictor_learning_rate: A constant learning rate for the predictor,
            or None (the compiled optimizer's, schedule included). With a
            number, the predictor gets its own copy of the compiled optimizer
            at that rate (SimSiam's predictor "lr with no decay", its Table 1:
            67.7% -> 68.1% on ImageNet).
            Defaults to None.

    Example:

    >>> import supcon_tf as sct
    >>> enc = sct.encoders.resnet18((28, 28, 1), width=0.125)
    >>> model = BYOLModel(enc, head=sct.heads.byol_projector(128, 512),
    ...                   augmenter=sct.augment.simclr((28, 28, 1)))
    >>> model.compile(optimizer="adam")   # BYOLLoss()

    Reference:
        Grill et al., "Bootstrap Your Own Latent: A New Approach to
        Self-Supervised Learning", NeurIPS 2020.
    """

    method_name = "byol"
    method_title = "Bootstrap your own latent (BYOL)"
    predictor_factory = staticmethod(byol_predictor)

    @staticmethod
    def default_predictor_hidden(head):
        return head.hidden_dims[0] if head.hidden_dims else 4096

    def __init__(self, encoder, head=None, predictor=None, augmenter=None, views=2,
                 momentum=0.99, momentum_schedule="cosine", probe_classes=None, **kwargs):
        check_two_views("BYOLModel", views)
        head = head if head is not None else byol_projector()
        super().__init__(encoder, head=head, augmenter=augmenter, views=views,
                         momentum=momentum, momentum_schedule=momentum_schedule,
                         probe_classes=probe_classes, **kwargs)
        self.predictor = (predictor if predictor is not None
                          else _predictor_for(self.head, byol_predictor))

    def default_loss(self):
        return BYOLLoss()

    def forward(self, views, training):
        features, projections = self.encode(views, training)
        _, targets = self.encode(views, training, self.target_encoder, self.target_head)
        return {"features": features, "projections": projections,
                "predictions": self.predict_views(projections, training),
                "targets": tf.stop_gradient(targets)}


@keras.saving.register_keras_serializable(package="supcon_tf")
class SimSiamModel(_Predicting, ContrastiveModel):
    """SimSiam: one network (encoder, projector `head`, `predictor`); the
    prediction from each view regresses the projection of the other through
    a stop-gradient.

    The loss is the paper's `D(p1, z2) / 2 + D(p2, z1) / 2` with `D` the
    negative cosine similarity (Keras's `CosineSimilarity`, the default
    loss): -1 at best. `stop_gradient=False` is the paper's ablation (figure
    2), which collapses: the `output_std` metric then falls to 0. Labels,
    when given, feed only the online probe.

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        head: The projector. Defaults to None: `layers.simsiam_projector()`
            (2048 wide; scale it to small encoders).
        predictor: Defaults to None: `layers.simsiam_predictor` with the
            projector's output size and a 512-wide bottleneck.
        augmenter: A Keras layer making each view, or None. Defaults to None.
        views: Must be 2. Defaults to 2.
        stop_gradient: Stop the gradient through the targets. Defaults to True.
        probe_classes: Classes of an online linear probe, or None. Defaults to None.
        predictor_learning_rate: A constant learning rate for the predictor,
            or None (the compiled optimizer's, schedule included). With a
            number, the predictor gets its own copy of the compiled optimizer
            at that rate (SimSiam's predictor "lr with no decay", its Table 1:
            67.7% -> 68.1% on ImageNet).
            Defaults to None.

    Reference:
        Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021.
    """

    direction_weight = 0.5
    method_name = "simsiam"
    method_title = "Simple Siamese networks (SimSiam)"
    head_options = {"normalize": False, "output_batch_norm": True}
    predictor_factory = staticmethod(simsiam_predictor)

    @staticmethod
    def default_predictor_hidden(head):
        return max(1, head.output_dim // 4)

    def __init__(self, encoder, head=None, predictor=None, augmenter=None, views=2,
                 stop_gradient=True, probe_classes=None, **kwargs):
        check_two_views("SimSiamModel", views)
        head = head if head is not None else simsiam_projector()
        super().__init__(encoder, head=head, augmenter=augmenter, views=views,
                         probe_classes=probe_classes, **kwargs)
        self.predictor = (predictor if predictor is not None
                          else _predictor_for(self.head, simsiam_predictor))
        self.stop_gradient = bool(stop_gradient)

    def default_loss(self):
        return keras.losses.CosineSimilarity(axis=-1)

    def forward(self, views, training):
        features, projections = self.encode(views, training)
        targets = tf.stop_gradient(projections) if self.stop_gradient else projections
        return {"features": features, "projections": projections,
                "predictions": self.predict_views(projections, training),
                "targets": targets}

    def get_config(self):
        return {**super().get_config(), "stop_gradient": self.stop_gradient}
