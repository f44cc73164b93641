"""CPC v2: each image a grid of overlapping patches, a masked context
network over their encodings predicting the patches further down (and up)
(Hénaff et al., ICML 2020)."""

import keras
import tensorflow as tf

from supcon_tf._checks import check_int
from supcon_tf._serialization import from_config_with_objects, serialize
from supcon_tf.dense import feature_map
from supcon_tf.encoders.patches import grid_size, patch_grid_encoder
from supcon_tf.heads import CPCContext, ProjectionHead
from supcon_tf.losses.cpc import CPCLoss
from supcon_tf.models.base import ContrastiveModel, LossReadsState
from supcon_tf.models.building import refuse_mixing

DIRECTIONS = ("down", "up")


@keras.saving.register_keras_serializable(package="supcon_tf")
class CPCModel(LossReadsState, ContrastiveModel):
    """Contrastive Predictive Coding, v2.

    Each image (one view: the `augmenter`'s, if any) is cut into a grid of
    overlapping `patch_size` patches `stride` apart; `encoder` (the patch
    encoder) encodes each patch on its own (with `patch_augmenter` on each
    patch while training: CPC v2's patch augmentation) and `head` maps each
    encoding to the space of the loss (`z`; its recipe head is linear, with
    no normalisation and no BatchNorm:
    statistics shared between patches let the network see across the
    context's mask, CPC v2's reason for layer norm). For each direction, a
    context network masked along the rows (`heads.CPCContext`) predicts
    the `z` of the patches `first_step`..`steps` rows further (`"down"`;
    `"up"` runs its own context on the grid upside down: CPC v2 predicts
    from both directions), and `losses.CPCLoss` scores each prediction
    against every patch of the global batch; the loss is the directions'
    mean. By default it predicts, as CPC v2, only the patches 3 rows ahead:
    with patches half their size apart, the patch 1 row below shares half
    its pixels with the context's own row and the one 2 rows below borders
    it, so nearer predictions can lean on low-level detail shared across
    the border.

    The image representation (`model.encoder`, what the probe, linear
    evaluation and export read) is the mean of the patches' encodings
    (`encoders.patch_grid_encoder`); `dense.feature_map(model.encoder)` is
    the grid of encodings. Its recipe builds the patch encoder with layer
    norm (`model.patch_norm`, `"layer"` by default; `"batch"` is CPC v1's).

    Args:
        encoder: The patch encoder, a Keras model from `[n, patch_size,
            patch_size, C]` to `[n, F]`.
        head: Each encoding's map to `z`, or None: a linear map to 64.
        augmenter: The image's augmentation, or None.
        image_shape: `(H, W, C)` of the images (required).
        patch_size: The patches' side. Defaults to 8.
        stride: Their step. Defaults to 4 (half-overlapping, as CPC v2).
        steps: The farthest row predicted (rows ahead), below the grid's
            height. Defaults to 3.
        first_step: The nearest row predicted, 1..`steps`: the context
            predicts the patches `first_step`..`steps` rows ahead.
            Defaults to 3 (CPC v2's single offset); 1 predicts every row up
            to `steps`.
        directions: `("down",)`, `("up",)` or both. Defaults to both.
        context_depth: Masked convolutions of each context network.
            Defaults to 2.
        patch_augmenter: A Keras layer on patches, or None. Defaults to None.
        probe_classes: Classes of an online linear probe, or None.

    Reference:
        Hénaff et al., "Data-Efficient Image Recognition with Contrastive
        Predictive Coding", ICML 2020; van den Oord, Li, Vinyals,
        "Representation Learning with Contrastive Predictive Coding", 2018.
    """

    own_loss = CPCLoss
    own_loss_reads = "the patches' encodings"
    supports_imix = False
    method_name = "cpc"
    method_title = "Contrastive Predictive Coding (CPC v2)"
    labels = "probe"
    head_options = {"normalize": False, "batch_norm": False, "kind": "linear"}

    @classmethod
    def encoder_shape(cls, image_shape, args):
        """The recipe's encoder is the patch encoder."""
        size = args.get("patch_size", 8)
        return (size, size, image_shape[-1])

    @classmethod
    def encoder_options(cls, args):
        """The patch encoder's normalisation (`model.patch_norm`)."""
        return {"norm": args.get("patch_norm", "layer")}

    @classmethod
    def from_recipe(cls, encoder, head, augmenter, probe_classes, context, **args):
        """The recipe's image shape; `patch_norm` went to the encoder;
        `patch_flip=True` flips each patch horizontally with probability
        1/2 while training (CPC v2's patch augmentation without its colour
        dropping, which needs three channels)."""
        args.pop("patch_norm", None)
        if args.pop("patch_flip", False):
            args["patch_augmenter"] = keras.layers.RandomFlip("horizontal",
                                                              seed=context["recipe"]["seed"])
        args.setdefault("image_shape", tuple(context["image_shape"]))
        return cls(encoder, head=head, augmenter=augmenter, probe_classes=probe_classes, **args)

    def __init__(self, encoder, head=None, augmenter=None, views=1, image_shape=None,
                 patch_size=8, stride=4, steps=3, first_step=3, directions=DIRECTIONS,
                 context_depth=2, patch_augmenter=None, probe_classes=None, **kwargs):
        if views != 1:
            raise ValueError(f"CPCModel reads one view per image. Received: views={views!r}")
        refuse_mixing("CPCModel", kwargs, "its loss pairs patches of one view")
        if image_shape is None:
            raise ValueError("CPCModel needs `image_shape=(H, W, C)`: `encoder` is the patch "
                             "encoder, and the grid is cut from images of that shape.")
        self.image_shape = tuple(int(v) for v in image_shape)
        self.patch_size = check_int(patch_size, "patch_size", 1)
        self.stride = check_int(stride, "stride", 1)
        rows = grid_size(self.image_shape[0], self.patch_size, self.stride)
        self.steps = check_int(steps, "steps", 1)
        if self.steps >= rows:
            raise ValueError(f"`steps` must be below the grid's {rows} rows (image "
                             f"{self.image_shape[0]}, patch {self.patch_size}, stride "
                             f"{self.stride}). Received: steps={steps!r}")
        self.first_step = check_int(first_step, "first_step", 1)
        if self.first_step > self.steps:
            raise ValueError(f"`first_step` must be at most `steps` ({self.steps}): the "
                             f"context predicts the rows first_step..steps ahead. "
                             f"Received: first_step={first_step!r}")
        directions = tuple(directions)
        if not directions or len(set(directions)) != len(directions) or any(
                d not in DIRECTIONS for d in directions):
            raise ValueError(f"`directions` must name different directions of {DIRECTIONS}. "
                             f"Received: directions={directions!r}")
        self.directions, self.context_depth = directions, check_int(context_depth,
                                                                    "context_depth", 1)
        self.patch_encoder, self.patch_augmenter = encoder, patch_augmenter
        grid = patch_grid_encoder(encoder, self.image_shape, self.patch_size, self.stride,
                                  augmenter=patch_augmenter, name="cpc_encoder")
        head = head if head is not None else ProjectionHead(64, kind="linear", normalize=False,
                                                            batch_norm=False)
        super().__init__(grid, head=head, augmenter=augmenter, views=1,
                         probe_classes=probe_classes, **kwargs)
        self.grid_map = feature_map(self.encoder)
        self.contexts = [CPCContext(self.steps - self.first_step + 1, depth=self.context_depth,
                                    name=f"context_{d}") for d in self.directions]

    def build(self, input_shape):
        super().build(input_shape)
        dim = self.head.compute_output_shape(self.encoder.output_shape)[-1]
        for context in self.contexts:
            if not context.built:
                context.build((None, None, None, dim))

    def default_loss(self):
        return CPCLoss()

    def make_views(self, x):
        views = super().make_views(x)
        if views.shape[1] is not None and views.shape[1] != 1:
            raise ValueError("CPCModel reads one view per image [batch, 1, H, W, C]. "
                             f"Received: views.shape={views.shape}")
        return views

    def forward(self, views, training):
        grid = self.grid_map(views[:, 0], training=training)                # [b, gh, gw, F]
        z = self.head(grid, training=training)                               # [b, gh, gw, D]
        features = tf.reduce_mean(grid, axis=[1, 2])
        z = tf.cast(z, tf.float32)
        # Per direction: the grid it reads (upside down for "up") and its predictions.
        targets = [z if d == "down" else tf.reverse(z, axis=[1]) for d in self.directions]
        predictions = [tf.cast(c(t), tf.float32) for c, t in zip(self.contexts, targets)]
        return {"features": features[:, None], "projections": tf.reduce_mean(z, [1, 2])[:, None],
                "z": z, "targets": targets, "predictions": predictions}

    def contrastive_loss(self, x, y, out, sample_weight, training):
        total = 0.0
        for p, target in zip(out["predictions"], out["targets"]):
            total += self.loss(None, p, sample_weight=sample_weight, targets=target,
                               first_step=self.first_step)
        return total / len(self.directions)

    def update_metrics(self, y, out):
        """`contrastive_accuracy`: how often the first direction's nearest
        prediction (`first_step` rows ahead) scores its own patch above every
        other patch of the batch."""
        z, target, k = out["z"], out["targets"][0], self.first_step
        p = out["predictions"][0][:, 0, :-k]                                   # [b, gh-k, gw, D]
        d = z.shape[-1]
        scores = tf.matmul(tf.reshape(p, [-1, d]), tf.reshape(target, [-1, d]), transpose_b=True)
        rows, cols = tf.shape(z)[1], tf.shape(z)[2]
        b = tf.shape(z)[0]
        # The own patch of prediction (n, i, j) is (n, i + k, j).
        n = tf.repeat(tf.range(b), (rows - k) * cols)
        ij = tf.tile(tf.range((rows - k) * cols), [b])
        own = n * rows * cols + ij + k * cols
        hit = tf.argmax(scores, axis=1, output_type=tf.int32) == own
        self.contrastive_accuracy_tracker.update_state(tf.cast(hit, tf.float32))

    def get_config(self):
        config = super().get_config()
        config.pop("views", None)
        config.update({"encoder": serialize(self.patch_encoder),
                       "image_shape": list(self.image_shape), "patch_size": self.patch_size,
                       "stride": self.stride, "steps": self.steps,
                       "first_step": self.first_step,
                       "directions": list(self.directions), "context_depth": self.context_depth,
                       "patch_augmenter": serialize(self.patch_augmenter)})
        return config

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config,
                                        ["encoder", "head", "augmenter", "patch_augmenter"])
