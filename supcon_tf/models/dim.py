"""Deep InfoMax (Hjelm et al., ICLR 2019) and AMDIM (Bachman et al.,
NeurIPS 2019): the encoder's global feature against its local features."""

import keras
import tensorflow as tf

from supcon_tf._checks import check_choice, check_int
from supcon_tf.dense import feature_map
from supcon_tf.heads import ProjectionHead
from supcon_tf.losses.infomax import AMDIMLoss, DIMLoss
from supcon_tf.models.base import ContrastiveModel, LossReadsState

OBJECTIVES = ("dim", "amdim")


@keras.saving.register_keras_serializable(package="supcon_tf")
class DIMModel(LossReadsState, ContrastiveModel):
    """Local-global mutual information: DIM's local objective or AMDIM's
    across two views.

    The encoder must end in one global pooling layer (as supcon_tf's ResNets
    do): one pass gives its last feature map (`h x w` locations of `C`
    channels) and its pooled feature. `head` maps the pooled feature to the
    global embedding `[R]`, `local_head` maps each location to `[R]` (an MLP
    on each location: a stack of 1 x 1 convolutions, as DIM's local
    encoder). Neither output is normalised.

    - `objective="dim"`: one view; the global embedding of image i against
      the local embeddings of the batch, its own locations positive
      (`losses.DIMLoss`, JSD by default, the paper's choice).
    - `objective="amdim"`: two views; the global embedding of each view
      against the other view's local embeddings, both ways, averaged
      (`losses.AMDIMLoss`, tclip 20, logit penalty 0.05). The official AMDIM
      also predicts across two feature scales (5 x 5 and 7 x 7 maps of its
      own encoder); this model uses the encoder's last map, one scale.

    Args:
        encoder: A functional Keras model from images to `[batch, C]` whose
            top level holds one `GlobalAveragePooling2D` /
            `GlobalMaxPooling2D` layer.
        head: The global head, or None: an MLP to `dim` (one hidden layer of
            `2 * dim`, no normalisation).
        local_head: The per-location head, or None: the same shape.
        augmenter: A Keras layer making each view. Defaults to None.
        objective: `"dim"` or `"amdim"`. Defaults to `"dim"`.
        dim: `R`, the embeddings' size, for the default heads. Defaults to 64.
        probe_classes: Classes of an online linear probe, or None.

    Metrics: `loss`, `contrastive_accuracy` (how often an image's global
    embedding scores its own mean location above every other image's),
    `output_std`, the probe's.

    Reference:
        Hjelm et al., "Learning deep representations by mutual information
        estimation and maximization", ICLR 2019; Bachman, Hjelm, Buchwalter,
        "Learning Representations by Maximizing Mutual Information Across
        Views", NeurIPS 2019.
    """

    own_loss = (DIMLoss, AMDIMLoss)
    own_loss_reads = "the encoder's local features"
    supports_imix = False
    method_name = "dim"
    method_title = "Deep InfoMax (DIM) / AMDIM"
    labels = "drop"

    @classmethod
    def encoder_shape(cls, image_shape, args):
        """An encoder for images of any size: its global pooling over the
        feature map is what the model reads the locations from."""
        return (None, None, image_shape[-1])

    head_options = {"normalize": False}

    @classmethod
    def from_recipe(cls, encoder, head, augmenter, probe_classes, context, **args):
        """The recipe's head is the global head, and a head of the same
        configuration the local one; its size is `dim`."""
        local = head.__class__.from_config({**head.get_config(), "name": "local_head"})
        return cls(encoder, head=head, local_head=local, augmenter=augmenter,
                   probe_classes=probe_classes, dim=head.output_dim, **args)

    def __init__(self, encoder, head=None, local_head=None, augmenter=None, objective="dim",
                 dim=64, probe_classes=None, **kwargs):
        self.objective = check_choice(objective, "objective", OBJECTIVES)
        self.dim = check_int(dim, "dim", 1)
        views = kwargs.pop("views", 1 if self.objective == "dim" else 2)
        if views != (1 if self.objective == "dim" else 2):
            raise ValueError(f"objective={objective!r} needs `views="
                             f"{1 if self.objective == 'dim' else 2}`. Received: views={views!r}")
        if head is None:
            head = ProjectionHead(self.dim, hidden_dims=(2 * self.dim,), normalize=False,
                                  name="global_head")
        self.local_head = local_head if local_head is not None else ProjectionHead(
            self.dim, hidden_dims=(2 * self.dim,), normalize=False, name="local_head")
        super().__init__(encoder, head=head, augmenter=augmenter, views=views,
                         probe_classes=probe_classes, **kwargs)
        spatial = feature_map(self.encoder)
        self.both = keras.Model(self.encoder.inputs, [spatial.outputs[0], self.encoder.outputs[0]],
                                name="map_and_features")

    def build(self, input_shape):
        super().build(input_shape)
        if not self.local_head.built:
            channels = self.both.output[0].shape[-1]
            self.local_head.build((None, None, channels))

    def default_loss(self):
        return DIMLoss("jsd") if self.objective == "dim" else AMDIMLoss()

    def forward(self, views, training):
        shape = tf.shape(views)
        flat = tf.reshape(views, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))
        spatial, features = self.both(flat, training=training)
        m = tf.shape(spatial)
        spatial = tf.reshape(spatial, [m[0], m[1] * m[2], spatial.shape[-1]])
        local = self.local_head(spatial, training=training)                  # [N, L, R]
        projections = self.head(features, training=training)                 # [N, R]
        views_ = shape[1]
        return {"features": tf.reshape(features, [shape[0], views_, -1]),
                "projections": tf.reshape(projections, [shape[0], views_, self.dim]),
                "local": tf.reshape(local, [shape[0], views_, -1, self.dim])}

    def contrastive_loss(self, x, y, out, sample_weight, training):
        g, local = tf.cast(out["projections"], tf.float32), tf.cast(out["local"], tf.float32)
        if self.objective == "dim":
            return self.loss(None, g[:, 0], sample_weight=sample_weight, local=local[:, 0])
        return 0.5 * (self.loss(None, g[:, 0], sample_weight=sample_weight, local=local[:, 1])
                      + self.loss(None, g[:, 1], sample_weight=sample_weight, local=local[:, 0]))

    def update_metrics(self, y, out):
        g = tf.cast(out["projections"][:, 0], tf.float32)
        other = 1 if self.objective == "amdim" else 0
        mean_local = tf.reduce_mean(tf.cast(out["local"][:, other], tf.float32), axis=1)
        scores = tf.matmul(g, mean_local, transpose_b=True)
        own = tf.argmax(scores, axis=1, output_type=tf.int32) == tf.range(tf.shape(g)[0])
        self.contrastive_accuracy_tracker.update_state(tf.cast(own, tf.float32))

    def get_config(self):
        config = super().get_config()
        config.pop("views", None)
        config.update({"local_head": keras.saving.serialize_keras_object(self.local_head),
                       "objective": self.objective, "dim": self.dim})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["local_head"] = keras.saving.deserialize_keras_object(config["local_head"])
        return super().from_config(config)
