"""Contrastive Multiview Coding: one network per view of the image, their
embeddings contrasted pair by pair."""

import keras
import tensorflow as tf

from supcon_tf._checks import check_choice
from supcon_tf._serialization import from_config_with_objects, serialize
from supcon_tf.encoders import multi_view, view_signals
from supcon_tf.heads import ProjectionHead
from supcon_tf.losses import CMCLoss
from supcon_tf.losses.cmc import GRAPHS
from supcon_tf.models.base import ContrastiveModel

_PACKAGE = "supcon_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MultiViewHead(keras.layers.Layer):
    """One head per view: features `[batch, views * F]` (the views' features
    side by side, as `supcon_tf.encoders.multi_view` gives them) ->
    `[batch, views, D]`, head `m` on block `m`.

    Args:
        heads: A list of heads (e.g. `ProjectionHead`s), one per view.
    """

    def __init__(self, heads, **kwargs):
        super().__init__(**kwargs)
        self.heads = list(heads)
        if len(self.heads) < 2:
            raise ValueError(f"`heads` must hold a head per view, at least 2. Received: "
                             f"{len(self.heads)} head(s)")

    def build(self, input_shape):
        total = input_shape[-1]
        if total is not None and total % len(self.heads):
            raise ValueError(f"{len(self.heads)} heads split features of size {total} into "
                             "equal blocks: the size must be a multiple of the views. "
                             f"Received: features shape {tuple(input_shape)}")
        block = None if total is None else total // len(self.heads)
        for head in self.heads:
            if not head.built:
                head.build(tuple(input_shape[:-1]) + (block,))
        self.built = True

    def call(self, features, training=False):
        blocks = tf.split(features, len(self.heads), axis=-1)
        return tf.stack([head(b, training=training) for head, b in zip(self.heads, blocks)],
                        axis=-2)

    def compute_output_shape(self, input_shape):
        out = self.heads[0].compute_output_shape(
            tuple(input_shape[:-1]) + (input_shape[-1] // len(self.heads),))
        return tuple(out[:-1]) + (len(self.heads), out[-1])

    def get_config(self):
        return {**super().get_config(), "heads": [serialize(h) for h in self.heads]}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["heads"] = [keras.saving.deserialize_keras_object(h) for h in config["heads"]]
        return cls(**config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CMCModel(ContrastiveModel):
    """Contrastive Multiview Coding (Tian, Krishnan, Isola, ECCV 2020).

    Each image is seen through M >= 2 signals (`supcon_tf.encoders.ViewSignal`:
    the image, its gradient magnitude, its Laplacian), each with its own
    backbone and its own linear head; the loss (`CMCLoss`) contrasts the
    views' embeddings pair by pair (core view or full graph), every other
    sample of the global batch a negative. The representation (`encoder`,
    what the probe, linear evaluation and export read) is the views'
    features side by side, as the paper concatenates L and ab.

    One augmented crop per image (`views=1`, the paper's: the signals of a
    view are of the same crop); the signals are the views. Labels reach
    only the online probe.

    Args:
        encoder: A backbone for one signal (it is copied per signal, fresh
            weights: `supcon_tf.encoders.multi_view`), or an encoder that
            `multi_view` built (a loaded model's).
        head: The head of each view (copied per view). Defaults to None: a
            linear `ProjectionHead(128, kind="linear")`, CMC's.
        signals: The views' signals, at least 2. Defaults to
            `("image", "gradient")`.
        graph: `"core"` or `"full"` (`CMCLoss`'s default when `compile`
            gets no loss). Defaults to `"core"`.
        temperature: `CMCLoss`'s default temperature. Defaults to 0.07.
        augmenter, probe_classes: As `ContrastiveModel`. `views` must be 1.

    Reference:
        Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020.
    """

    method_name = "cmc"
    method_title = "Contrastive Multiview Coding (CMC)"
    labels = "probe"
    head_options = {"kind": "linear"}

    def __init__(self, encoder, head=None, augmenter=None, views=1, probe_classes=None,
                 signals=("image", "gradient"), graph="core", temperature=0.07, **kwargs):
        if views != 1:
            raise ValueError("CMCModel contrasts signals of one crop: it needs views=1 "
                             f"(`signals` are its views). Received: views={views!r}")
        built_signals = view_signals(encoder)
        if built_signals:
            signals = built_signals
        else:
            encoder = multi_view(encoder, signals)
        signals = tuple(signals)
        graph = check_choice(graph, "graph", GRAPHS)
        CMCLoss(temperature)             # checks the temperature now
        if not isinstance(head, MultiViewHead):
            template = head if head is not None else ProjectionHead(128, kind="linear")
            config = template.get_config()
            head = MultiViewHead([type(template).from_config(
                {**config, "name": f"{kind}_head"}) for kind in signals], name="view_heads")
        elif len(head.heads) != len(signals):
            raise ValueError(f"`head` has {len(head.heads)} heads for {len(signals)} "
                             f"signals {signals}.")
        super().__init__(encoder, head=head, augmenter=augmenter, views=1,
                         probe_classes=probe_classes, **kwargs)
        self.signals, self.graph, self.temperature = signals, graph, float(temperature)

    def default_loss(self):
        return CMCLoss(temperature=self.temperature, graph=self.graph)

    def forward(self, views, training):
        """The view's features `[batch, 1, M * F]` (what the probe reads) and
        each signal's embedding `[batch, M, D]`."""
        if views.shape[1] is not None and views.shape[1] != 1:
            raise ValueError("CMCModel reads one crop per image ([batch, 1, H, W, C]); its "
                             f"signals are its views. Received: views.shape={views.shape}")
        features = self.encoder(views[:, 0], training=training)
        return {"features": features[:, None], "projections": self.head(features,
                                                                        training=training)}

    def call(self, inputs, training=False):
        """Images `[batch, H, W, C]` -> the signals' embeddings side by side
        `[batch, M * D]`; one crop per image `[batch, 1, H, W, C]` -> each
        signal's `[batch, M, D]` (what the loss reads)."""
        inputs = tf.convert_to_tensor(inputs)
        if inputs.shape.rank == 5:
            return self.forward(inputs, training)["projections"]
        out = self.head(self.encoder(inputs, training=training), training=training)
        return tf.reshape(out, [tf.shape(out)[0], -1])

    def contrastive_loss(self, x, y, out, sample_weight, training):
        return self.loss_object()(None, out["projections"], sample_weight=sample_weight)

    def update_metrics(self, y, out):
        super().update_metrics(None, out)

    def get_config(self):
        config = super().get_config()
        config.update({"signals": list(self.signals), "graph": self.graph,
                       "temperature": self.temperature})
        return config

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config, ["encoder", "head", "augmenter"])
