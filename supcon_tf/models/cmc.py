"""Contrastive Multiview Coding: one network per view of the image, their
embeddings contrasted pair by pair."""

import keras
import tensorflow as tf

from supcon_tf import _cross_replica
from supcon_tf._checks import check_choice, check_positive
from supcon_tf._serialization import from_config_with_objects, serialize
from supcon_tf.encoders import multi_view, signal_branches, view_signals
from supcon_tf.heads import ProjectionHead
from supcon_tf.losses import CMCLoss
from supcon_tf.losses.cmc import GRAPHS
from supcon_tf.models.base import ContrastiveModel
from supcon_tf.models.building import refuse_mixing

_PACKAGE = "supcon_tf"
CROPS = ("shared", "independent")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MultiViewHead(keras.layers.Layer):
    """One head per view: features `[batch, views * F]` (the views' features
    side by side, as `supcon_tf.encoders.multi_view` gives them) ->
    `[batch, views, D]`, head `m` on block `m`; with `split=False` every head
    reads all the features (`[batch, F]` -> `[batch, heads, D]`: LooC's
    embedding spaces on one backbone).

    Args:
        heads: A list of heads (e.g. `ProjectionHead`s), one per view.
        split: Give head `m` block `m` of the features. Defaults to True.
    """

    def __init__(self, heads, split=True, **kwargs):
        super().__init__(**kwargs)
        self.heads = list(heads)
        self.split = bool(split)
        if len(self.heads) < 2:
            raise ValueError(f"`heads` must hold a head per view, at least 2. Received: "
                             f"{len(self.heads)} head(s)")

    def build(self, input_shape):
        total = input_shape[-1]
        if not self.split:
            for head in self.heads:
                if not head.built:
                    head.build(tuple(input_shape))
            self.built = True
            return
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
        blocks = (tf.split(features, len(self.heads), axis=-1) if self.split
                  else [features] * len(self.heads))
        return tf.stack([head(b, training=training) for head, b in zip(self.heads, blocks)],
                        axis=-2)

    def compute_output_shape(self, input_shape):
        block = input_shape[-1] // len(self.heads) if self.split else input_shape[-1]
        out = self.heads[0].compute_output_shape(tuple(input_shape[:-1]) + (block,))
        return tuple(out[:-1]) + (len(self.heads), out[-1])

    def get_config(self):
        return {**super().get_config(), "heads": [serialize(h) for h in self.heads],
                "split": self.split}

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

    `crops="shared"` (the paper's): one augmented crop per image, every
    signal of that crop. A signal derived from the image (its gradient) is
    a function of it, so on one crop the views can be matched by where the
    pixels are alone; `crops="independent"` gives each signal its own
    augmented crop (`views` = the number of signals), so that what the views
    share is the object, not the crop. Labels reach only the online probe.

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
        crops: `"shared"` or `"independent"`. Defaults to `"shared"`.
        augmenter, probe_classes: As `ContrastiveModel`. `views` follows
            `crops` (1, or one per signal); another value is an error.

    Reference:
        Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020.
    """

    method_name = "cmc"
    method_title = "Contrastive Multiview Coding (CMC)"
    labels = "probe"
    head_options = {"kind": "linear"}

    def __init__(self, encoder, head=None, augmenter=None, views=None, probe_classes=None,
                 signals=("image", "gradient"), graph="core", temperature=0.07,
                 crops="shared", **kwargs):
        built_signals = self.built_signals(encoder)
        if built_signals:
            signals = built_signals
        else:
            encoder = multi_view(encoder, signals)
        signals = tuple(signals)
        crops = check_choice(crops, "crops", CROPS)
        refuse_mixing("CMCModel", kwargs, "both pair two crops through one encoder")
        expected = 1 if crops == "shared" else len(signals)
        if views is not None and views != expected:
            raise ValueError(f"CMCModel with crops={crops!r} reads {expected} crop(s) per image "
                             f"(views={expected}). Received: views={views!r}")
        graph = check_choice(graph, "graph", GRAPHS)
        temperature = check_positive(temperature, "temperature")
        if not isinstance(head, MultiViewHead):
            template = head if head is not None else ProjectionHead(128, kind="linear")
            config = template.get_config()
            head = MultiViewHead([type(template).from_config(
                {**config, "name": f"{kind}_head"}) for kind in signals], name="view_heads")
        elif len(head.heads) != len(signals):
            raise ValueError(f"`head` has {len(head.heads)} heads for {len(signals)} "
                             f"signals {signals}.")
        super().__init__(encoder, head=head, augmenter=augmenter, views=expected,
                         probe_classes=probe_classes, **kwargs)
        self.signals, self.graph, self.temperature = signals, graph, float(temperature)
        self.crops = crops

    @staticmethod
    def built_signals(encoder):
        """The signals of an encoder built for this model (a loaded one's),
        or () for a backbone to build one from."""
        return view_signals(encoder)

    def default_loss(self):
        return CMCLoss(temperature=self.temperature, graph=self.graph)

    def forward(self, views, training):
        """The view's features `[batch, 1, M * F]` (what the probe reads) and
        each signal's embedding `[batch, M, D]`."""
        if views.shape[1] is not None and views.shape[1] != self.views:
            raise ValueError(f"CMCModel with crops={self.crops!r} reads {self.views} crop(s) "
                             f"per image ([batch, {self.views}, H, W, C]). "
                             f"Received: views.shape={views.shape}")
        if self.crops == "shared":
            features = self.encoder(views[:, 0], training=training)
        else:                               # signal m of crop m, through its own backbone
            features = tf.concat([backbone(signal(views[:, m]), training=training)
                                  for m, (signal, backbone)
                                  in enumerate(signal_branches(self.encoder))], axis=-1)
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
        """`contrastive_accuracy`: how often a sample's view 0 embedding is
        nearest (cosine, over the global batch) to its own view 1 embedding
        among every sample's, and the same from view 1 to view 0: the
        retrieval the loss trains (the signals' heads embed in spaces of
        their own, so the family's nearest-other-view metric does not apply)."""
        z = tf.math.l2_normalize(tf.cast(out["projections"], tf.float32), axis=-1)
        everyone, offset = _cross_replica.global_batch(z)
        own = offset + tf.range(tf.shape(z)[0])
        hits = []
        for a, b in ((0, 1), (1, 0)):
            nearest = tf.argmax(tf.matmul(z[:, a], everyone[:, b], transpose_b=True), axis=1,
                                output_type=tf.int32)
            hits.append(tf.cast(tf.equal(nearest, own), tf.float32))
        self.contrastive_accuracy_tracker.update_state(tf.concat(hits, 0))

    def get_config(self):
        config = super().get_config()
        config.update({"signals": list(self.signals), "graph": self.graph,
                       "temperature": self.temperature, "crops": self.crops})
        return config

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config, ["encoder", "head", "augmenter"])
