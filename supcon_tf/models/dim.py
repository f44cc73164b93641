"""Deep InfoMax (Hjelm et al., ICLR 2019) and AMDIM (Bachman et al.,
NeurIPS 2019): the encoder's global feature against its local features."""

import keras
import tensorflow as tf

from supcon_tf._checks import check_choice, check_int
from supcon_tf.dense import feature_map
from supcon_tf.heads import ProjectionHead
from supcon_tf.losses.infomax import AMDIMLoss, DIMLoss
from supcon_tf.models.base import ContrastiveModel, LossReadsState
from supcon_tf.models.local import stage_boundaries

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
      (`losses.AMDIMLoss`, tclip 20, logit penalty 0.05). With `scales=2`,
      AMDIM's multiscale objective as the official code sums it: global to
      the last map ("1t5"), global to a larger map earlier in the encoder
      ("1t7", `second_map`, with a head of its own), and one random location
      of the last map to the other view's last map ("5t5"), each both ways.

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
        scales: 1, or 2 (AMDIM only): also predict across a second, larger
            feature map. Defaults to 1.
        second_map: With `scales=2`, the name of the encoder layer whose
            output is the second map, or None: the end of the stage before
            the last of a supcon_tf ResNet (7 x 7 on Fashion-MNIST, the last
            map being 4 x 4).
        local_head_2: With `scales=2`, the second map's per-location head,
            or None: the same shape as `local_head`.
        local_map: With `objective="dim"`, the name of the encoder layer
            whose output holds the local features, or None: the last map.
            DIM's encoders take them from a map before the last (the
            official 28 x 28 encoder's 7 x 7, each location seeing 13
            pixels): a location of the last map sees the whole image, and
            the global feature, pooled from those locations, identifies
            them without learning what the image shows.
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
        if args.get("scales", 1) == 2:
            args["local_head_2"] = head.__class__.from_config(
                {**head.get_config(), "name": "local_head_2"})
        return cls(encoder, head=head, local_head=local, augmenter=augmenter,
                   probe_classes=probe_classes, dim=head.output_dim, **args)

    def __init__(self, encoder, head=None, local_head=None, augmenter=None, objective="dim",
                 dim=64, probe_classes=None, scales=1, second_map=None, local_head_2=None,
                 local_map=None, **kwargs):
        self.objective = check_choice(objective, "objective", OBJECTIVES)
        self.dim = check_int(dim, "dim", 1)
        self.scales = check_choice(check_int(scales, "scales", 1), "scales", (1, 2))
        if self.scales == 2 and self.objective != "amdim":
            raise ValueError("`scales=2` is AMDIM's multiscale objective: it needs "
                             f"objective='amdim'. Received: objective={objective!r}")
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
        self.local_map = None
        if local_map is not None:
            if self.objective != "dim":
                raise ValueError("`local_map` picks DIM's local features; AMDIM reads the last "
                                 "map (and `second_map`). Received: objective="
                                 f"{objective!r}, local_map={local_map!r}")
            self.local_map = _named_map(self.encoder, local_map, "local_map")
        local_output = (spatial.outputs[0] if self.local_map is None
                        else self.encoder.get_layer(self.local_map).output)
        outputs = [local_output, self.encoder.outputs[0]]
        self.second_map = self.local_head_2 = None
        if self.scales == 2:
            self.second_map = _second_map(self.encoder, second_map)
            outputs.insert(0, self.encoder.get_layer(self.second_map).output)
            self.local_head_2 = local_head_2 if local_head_2 is not None else ProjectionHead(
                self.dim, hidden_dims=(2 * self.dim,), normalize=False, name="local_head_2")
            # One random location of the last map per image, for "5t5".
            self.location_seed = keras.random.SeedGenerator(0)
        self.both = keras.Model(self.encoder.inputs, outputs, name="map_and_features")

    def build(self, input_shape):
        super().build(input_shape)
        heads = [(self.local_head, self.both.output[-2])]
        if self.scales == 2:
            heads.append((self.local_head_2, self.both.output[0]))
        for head, spatial in heads:
            if not head.built:
                head.build((None, None, spatial.shape[-1]))

    def default_loss(self):
        return DIMLoss("jsd") if self.objective == "dim" else AMDIMLoss()

    def forward(self, views, training):
        shape = tf.shape(views)
        flat = tf.reshape(views, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))
        maps = self.both(flat, training=training)
        features = maps[-1]
        views_ = shape[1]

        def locations(spatial, head):
            m = tf.shape(spatial)
            spatial = tf.reshape(spatial, [m[0], m[1] * m[2], spatial.shape[-1]])
            local = head(spatial, training=training)                          # [N, L, R]
            return tf.reshape(local, [shape[0], views_, -1, self.dim])

        projections = self.head(features, training=training)                 # [N, R]
        out = {"features": tf.reshape(features, [shape[0], views_, -1]),
               "projections": tf.reshape(projections, [shape[0], views_, self.dim]),
               "local": locations(maps[-2], self.local_head)}
        if self.scales == 2:
            out["local_2"] = locations(maps[0], self.local_head_2)
        return out

    def contrastive_loss(self, x, y, out, sample_weight, training):
        g, local = tf.cast(out["projections"], tf.float32), tf.cast(out["local"], tf.float32)
        if self.objective == "dim":
            return self.loss(None, g[:, 0], sample_weight=sample_weight, local=local[:, 0])

        def both_ways(source, target):
            return 0.5 * (
                self.loss(None, source[:, 0], sample_weight=sample_weight, local=target[:, 1])
                + self.loss(None, source[:, 1], sample_weight=sample_weight, local=target[:, 0]))

        loss = both_ways(g, local)                                          # 1t5
        if self.scales == 2:
            loss += both_ways(g, tf.cast(out["local_2"], tf.float32))      # 1t7
            # 5t5: a random location of each view's last map as the source.
            batch, n_loc = tf.shape(local)[0], tf.shape(local)[2]
            picks = keras.random.randint((batch, 2), 0, n_loc, seed=self.location_seed)
            source = tf.stack([tf.gather(local[:, v], picks[:, v], axis=1, batch_dims=1)
                               for v in range(2)], axis=1)                  # [B, 2, R]
            loss += both_ways(source, local)
        return loss

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
                       "objective": self.objective, "dim": self.dim, "scales": self.scales,
                       "second_map": self.second_map, "local_map": self.local_map,
                       "local_head_2": (None if self.local_head_2 is None else
                                        keras.saving.serialize_keras_object(self.local_head_2))})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("local_head", "local_head_2"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return super().from_config(config)


def _second_map(encoder, name):
    """The name of the layer giving AMDIM's second map: `name` if the encoder
    has it, else (None) the end of a supcon_tf ResNet's stage before the last."""
    if name is None:
        stages = stage_boundaries(encoder)
        if not stages:
            raise ValueError(
                "`scales=2` needs a second feature map: name the encoder layer whose output "
                "it is with `second_map=` (found no supcon_tf ResNet stages in "
                f"{encoder.name!r}). Received: second_map=None")
        return stages[-1]
    return _named_map(encoder, name, "second_map")


def _named_map(encoder, name, arg):
    """`name`, checked to be a layer of `encoder` with a spatial output
    (`arg`: the argument named in the errors)."""
    if not isinstance(name, str):
        raise TypeError(f"`{arg}` must be a layer name (str) or None. Received: {name!r}")
    names = [layer.name for layer in encoder.layers]
    if name not in names:
        raise ValueError(f"`{arg}` names a layer the encoder {encoder.name!r} does not "
                         f"have. Received: {arg}={name!r}")
    if len(encoder.get_layer(name).output.shape) != 4:
        raise ValueError(f"`{arg}` must name a layer with a spatial output [batch, h, w, "
                         f"channels]. Received: {arg}={name!r} with output shape "
                         f"{encoder.get_layer(name).output.shape}")
    return name
