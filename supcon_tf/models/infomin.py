"""InfoMin's view learning: a flow generator of the views trained against
the views' encoders (Tian et al., "What Makes for Good Views for
Contrastive Learning?", NeurIPS 2020, section 4)."""

import numbers

import keras
import tensorflow as tf

from supcon_tf import _cross_replica
from supcon_tf.encoders import ViewFlow, learned_branches, learned_views
from supcon_tf.models.base import _probe_targets
from supcon_tf.models.cmc import CMCModel

_PACKAGE = "supcon_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class InfoMinModel(CMCModel):
    """InfoMin's learned views (Tian et al., NeurIPS 2020): CMC on views that
    a `ViewFlow` makes from each image, the flow trained adversarially.

    The encoder is `supcon_tf.encoders.learned_views`: image -> `ViewFlow`
    (an invertible, volume-preserving per-pixel map of the image's signals,
    the paper's VP flow standing in for its colour space) -> one channel per
    view -> a backbone per view, features side by side. With
    `adversarial=True` (view learning) each step takes the encoders and heads
    down the CMC loss and the flow *up* it, min over the generator of the
    InfoNCE bound on the views' shared information, max over the encoders:
    the flow learns views that share as little as the encoders can still
    match. `label_weight` > 0 is the paper's semi-supervised variant: a linear
    classifier on each view's features, whose cross-entropy (times
    `label_weight`) the flow and the encoders both minimise, so the views
    keep the label's information while shedding the rest. With
    `adversarial=False` the flow is frozen: stage two of the paper's
    protocol, a fresh CMC on views learned by a stage-one run
    (`from_recipe(..., views_from=<stage one's encoder.keras>)`), or on the
    signals themselves from an untrained flow.

    Args:
        encoder: A one-channel backbone (copied per view, with a new
            `ViewFlow(signals, flow_steps, flow_hidden)` in front), or a
            `learned_views` encoder (a loaded model's, or one with a
            stage-one flow).
        signals: The flow's input signals; their number is the number of
            views. Defaults to `("image", "gradient")`.
        flow_steps, flow_hidden: `ViewFlow`'s `steps` and `hidden`.
            Defaults to 4 and 16.
        adversarial: Train the flow against the encoders. Defaults to True.
        label_weight: Weight of the views' cross-entropy, >= 0 (> 0 needs
            `probe_classes` and labels in `fit`). Defaults to 0.0.
        crops: As `CMCModel`. Defaults to `"independent"`.
        head, augmenter, views, probe_classes, graph, temperature: As
            `CMCModel`.
    """

    method_name = "infomin"
    method_title = "InfoMin view learning"
    labels = "probe"

    def __init__(self, encoder, head=None, augmenter=None, views=None, probe_classes=None,
                 signals=("image", "gradient"), flow_steps=4, flow_hidden=16,
                 adversarial=True, label_weight=0.0, graph="core", temperature=0.07,
                 crops="independent", **kwargs):
        if learned_branches(encoder) is None:
            encoder = learned_views(encoder, ViewFlow(signals, flow_steps, flow_hidden))
        if not isinstance(adversarial, bool):
            raise TypeError(f"`adversarial` must be a bool. Received: adversarial={adversarial!r}")
        if (isinstance(label_weight, bool) or not isinstance(label_weight, numbers.Real)
                or not 0 <= label_weight < float("inf")):
            raise ValueError("`label_weight` must be a finite number >= 0. "
                             f"Received: label_weight={label_weight!r}")
        if label_weight > 0 and probe_classes is None:
            raise ValueError("`label_weight` > 0 trains a classifier per view: it needs "
                             f"`probe_classes`. Received: label_weight={label_weight}, "
                             "probe_classes=None")
        super().__init__(encoder, head=head, augmenter=augmenter, views=views,
                         probe_classes=probe_classes, graph=graph, temperature=temperature,
                         crops=crops, **kwargs)
        self.flow, self.branches = learned_branches(self.encoder)
        self.flow_steps, self.flow_hidden = self.flow.steps, self.flow.hidden
        self.adversarial, self.label_weight = adversarial, float(label_weight)
        if not adversarial:
            self.flow.trainable = False
        self.view_classifiers = (
            [keras.layers.Dense(probe_classes, name=f"view{m}_classifier")
             for m in range(len(self.signals))] if self.label_weight > 0 else [])
        if self.label_weight > 0:
            self.view_loss_tracker = keras.metrics.Mean(name="view_cross_entropy")

    @classmethod
    def from_recipe(cls, encoder, head, augmenter, probe_classes, context, views_from=None,
                    **args):
        """`views_from`: the path of a stage-one run's encoder (`.keras`);
        its flow, frozen, makes the views of a fresh model (`adversarial`
        must then be False)."""
        if views_from is not None:
            if args.get("adversarial", True):
                raise ValueError("`views_from` takes a trained flow for a model that does not "
                                 "train it: set adversarial=False. Received: "
                                 f"views_from={views_from!r}, adversarial=True")
            learned = learned_branches(keras.models.load_model(views_from, compile=False))
            if learned is None:
                raise ValueError(f"`views_from` must be the encoder of an InfoMinModel. "
                                 f"Received: views_from={views_from!r}")
            trained = learned[0]
            flow = ViewFlow.from_config(trained.get_config())
            flow.build((None,) + tuple(encoder.input_shape[1:]))
            flow.set_weights(trained.get_weights())
            encoder = learned_views(encoder, flow)
        return cls(encoder, head=head, augmenter=augmenter, probe_classes=probe_classes, **args)

    @staticmethod
    def built_signals(encoder):
        learned = learned_branches(encoder)
        return () if learned is None else learned[0].signals

    def build(self, input_shape):
        super().build(input_shape)
        width = self.encoder.output.shape[-1] // len(self.signals)
        for classifier in self.view_classifiers:
            if not classifier.built:
                classifier.build((None, width))

    def forward(self, views, training):
        if self.crops == "shared":
            return super().forward(views, training)
        if views.shape[1] is not None and views.shape[1] != self.views:
            raise ValueError(f"InfoMinModel with crops='independent' reads {self.views} crops "
                             f"per image ([batch, {self.views}, H, W, C]). "
                             f"Received: views.shape={views.shape}")
        features = tf.concat([backbone(channel(self.flow(views[:, m])), training=training)
                              for m, (channel, backbone) in enumerate(self.branches)], axis=-1)
        return {"features": features[:, None],
                "projections": self.head(features, training=training)}

    def view_loss(self, y, out):
        """`label_weight` times the mean cross-entropy of the views'
        classifiers (scaled for the replicas' sum), or None."""
        if not self.view_classifiers:
            return None
        if y is None:
            raise ValueError("InfoMinModel with label_weight > 0 needs labels: fit on "
                             "(images, labels).")
        ids = _probe_targets(tf.convert_to_tensor(y))
        blocks = tf.split(out["features"][:, 0], len(self.view_classifiers), axis=-1)
        losses = [tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            ids, tf.cast(classifier(block), tf.float32), from_logits=True))
            for classifier, block in zip(self.view_classifiers, blocks)]
        loss = tf.add_n(losses) / len(losses)
        self.view_loss_tracker.update_state(loss)
        return self.label_weight * loss / _cross_replica.num_replicas()

    def train_step(self, data):
        if not self.adversarial and not self.view_classifiers:
            return super().train_step(data)          # a frozen flow: CMC's step
        with tf.GradientTape(persistent=True) as tape:
            loss, probe_loss, out, y, sample_weight = self._step(data, True)
            view_loss = self.view_loss(y, out)
            task = 0.0 if view_loss is None else view_loss
            total = loss + self.additional_losses() + task
            if probe_loss is not None:
                total += probe_loss
            scaled = self.optimizer.scale_loss(total)
            # The generator's objective: up the contrastive loss, down the views' task.
            scaled_flow = self.optimizer.scale_loss(task - loss)
        flow_ids = {id(v) for v in self.flow.trainable_variables}
        others = [v for v in self.trainable_variables if id(v) not in flow_ids]
        pairs = list(zip(tape.gradient(scaled, others), others))
        if self.adversarial:
            flow_vars = self.flow.trainable_variables
            pairs += list(zip(tape.gradient(scaled_flow, flow_vars), flow_vars))
        del tape
        self.apply_gradients([(g, v) for g, v in pairs if g is not None])
        self.after_step(y, out)
        return self._logs(loss, y, out, sample_weight)

    def _own_metrics(self):
        own = super()._own_metrics()
        return own + ([self.view_loss_tracker] if self.label_weight > 0 else [])

    def get_config(self):
        config = super().get_config()
        config.update({"flow_steps": self.flow_steps, "flow_hidden": self.flow_hidden,
                       "adversarial": self.adversarial, "label_weight": self.label_weight})
        return config
