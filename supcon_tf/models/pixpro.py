"""PixPro: pixel-level consistency between two crops' feature maps
(Xie et al., CVPR 2021; zdaxie/PixPro)."""

import keras
import tensorflow as tf

from supcon_tf._checks import check_positive
from supcon_tf.augment.geometry import CropViews, split_geometry
from supcon_tf.dense import feature_map
from supcon_tf.heads import PixelPropagation, ProjectionHead
from supcon_tf.losses.pixpro import PixProLoss, pixel_positive_mask
from supcon_tf.models.base import LossReadsState
from supcon_tf.models.building import check_two_views, refuse_mixing
from supcon_tf.models.momentum_model import MomentumModel


def _map_and_features(encoder):
    return keras.Model(encoder.inputs, [feature_map(encoder).outputs[0], encoder.outputs[0]],
                       name=f"{encoder.name}_map_and_features")


@keras.saving.register_keras_serializable(package="supcon_tf")
class PixProModel(LossReadsState, MomentumModel):
    """PixPro: each location of one crop's feature map regresses the
    momentum network's features at the nearby locations of the other crop.

    The model makes its two views itself (`augment.CropViews`): resized
    crops and horizontal flips whose boxes it keeps, then the rest of the
    `augmenter` (colour, blur) on each view. Each location's centre in the
    original image follows from its view's box; location pairs closer than
    `threshold` (0.7) bin diagonals are positives (`losses.pixel_positive_mask`).
    The encoder keeps its spatial map: `head` (the projector, an MLP) runs on
    every location of the last feature map (the official 1 x 1 convolutions),
    the pixel propagation module (`heads.PixelPropagation`, gamma 2, one
    transform layer) on the online projections, and the loss
    (`losses.PixProLoss`) is the official `-2 mean cos` over the positive
    pairs, summed over both directions (so it lies in [-4, 4]). The target
    network (encoder and projector) is the online one's EMA with the cosine
    momentum schedule from `momentum` (0.99) to 1 (`MomentumModel`). The
    official instance branch (PixContrast, `pixpro-ins-loss-weight`) is off
    in PixPro's own recipe and not built here.

    `encoder` must end in one global pooling layer (supcon_tf's ResNets):
    the map before it is what PixPro trains, the pooled features feed the
    online probe and `model(images)` gives the mean projection over
    locations.

    Args:
        encoder: A functional Keras model from images to `[batch, F]` whose
            top level holds one `GlobalAveragePooling2D` /
            `GlobalMaxPooling2D` layer.
        head: The projector on each location (no normalisation), or None:
            an MLP to 256 with one hidden layer of 2048 (the official
            4096 -> 256 at ResNet-50; scale it to small encoders).
        augmenter: An augmentation recipe (e.g. `augment.simclr(...)`) whose
            geometric layers are one `RandomResizedCrop` and one horizontal
            `RandomFlip`: the model takes their settings for its own crops
            and runs the rest after them. None: crops of area (0.08, 1)
            and flips, nothing else. A layer that moves pixels otherwise
            (quarter turns, RandAugment) is refused.
        views: Must be 2. Defaults to 2.
        threshold: The positive pairs' distance in bin diagonals. Defaults
            to 0.7.
        gamma: The propagation's sharpness. Defaults to 2.0.
        transform_layers: The propagation's value transform, 0, 1 or 2
            layers. Defaults to 1.
        momentum, momentum_schedule: As `MomentumModel`. Default to 0.99
            and `"cosine"`.
        view_size: `(height, width)` of the views, or None: the
            augmenter's crop size, else the encoder's input size.
        seed: Seed of the crops and flips. Defaults to None.
        probe_classes: Classes of an online linear probe, or None.

    Input: images `[batch, H, W, C]`, or views the pipeline made with their
    boxes, `{"views": [batch, 2, h, w, C], "boxes": [batch, 2, 4]}`
    (`augment.CropViews`' output). Views without boxes are refused: nothing
    would say which of their locations match.

    Reference:
        Xie et al., "Propagate Yourself: Exploring Pixel-Level Consistency
        for Unsupervised Visual Representation Learning", CVPR 2021.
    """

    own_loss = PixProLoss
    own_loss_reads = "the views' crop boxes"
    supports_imix = False
    method_name = "pixpro"
    method_title = "Pixel-to-propagation consistency (PixPro)"
    labels = "probe"
    head_options = {"normalize": False}

    @classmethod
    def encoder_shape(cls, image_shape, args):
        """An encoder for images of any size: its global pooling over the
        feature map is what the model reads the locations from."""
        return (None, None, image_shape[-1])

    @classmethod
    def from_recipe(cls, encoder, head, augmenter, probe_classes, context, **args):
        """The recipe's image size is the views' size."""
        args.setdefault("view_size", tuple(context["image_shape"][:2]))
        return cls(encoder, head=head, augmenter=augmenter, probe_classes=probe_classes, **args)

    def __init__(self, encoder, head=None, augmenter=None, views=2, threshold=0.7, gamma=2.0,
                 transform_layers=1, momentum=0.99, momentum_schedule="cosine", view_size=None,
                 seed=None, probe_classes=None, **kwargs):
        check_two_views("PixProModel", views)
        refuse_mixing("PixProModel", kwargs,
                      "both change a view's pixels away from the box it records")
        self.threshold = check_positive(threshold, "threshold")
        crop, flip, photometric = (split_geometry(augmenter) if augmenter is not None
                                   else (None, True, None))
        if view_size is None:
            view_size = ((crop.height, crop.width) if crop is not None
                         else tuple(encoder.input_shape[1:3]))
        try:
            height, width = (int(v) for v in view_size)
        except (TypeError, ValueError):
            raise ValueError("PixProModel needs the views' size: pass `view_size=(height, "
                             "width)` (the encoder takes images of any size and the augmenter "
                             f"has no crop). Received: view_size={view_size!r}") from None
        head = head if head is not None else ProjectionHead(256, hidden_dims=(2048,),
                                                            normalize=False)
        super().__init__(encoder, head=head, augmenter=augmenter, views=views, momentum=momentum,
                         momentum_schedule=momentum_schedule, probe_classes=probe_classes,
                         **kwargs)
        self.view_size, self.seed = (height, width), seed
        self.crop_views = CropViews(
            height, width, views=2,
            scale=crop.scale if crop is not None else (0.08, 1.0),
            ratio=crop.ratio if crop is not None else (3 / 4, 4 / 3),
            flip=flip, photometric=photometric, seed=seed, name="crop_views")
        self.propagation = PixelPropagation(gamma, transform_layers,
                                            synchronized_bn=getattr(head, "synchronized_bn",
                                                                    False),
                                            name="pixel_propagation")
        self.online = _map_and_features(self.encoder)
        self.target_map = feature_map(self.target_encoder)

    def build(self, input_shape):
        # The projectors run on the map's channels, not on the pooled features.
        channels = self.online.outputs[0].shape[-1]
        for head in (self.head, self.target_head):
            if not head.built:
                head.build((None, None, channels))
        super().build(input_shape)
        if not self.propagation.built:
            self.propagation.build(tuple(self.head.compute_output_shape((None, None, channels))))

    def default_loss(self):
        return PixProLoss()

    def make_views(self, x):
        """Images -> `{"views", "boxes"}` by the model's crops; views with
        boxes pass through (checked)."""
        if isinstance(x, dict):
            if set(x) != {"views", "boxes"}:
                raise ValueError("PixProModel's pre-made input must be {'views': [batch, 2, h, "
                                 "w, C], 'boxes': [batch, 2, 4]}. Received keys: "
                                 f"{sorted(x)}")
            views, boxes = tf.convert_to_tensor(x["views"]), tf.convert_to_tensor(x["boxes"])
            if views.shape.rank != 5 or views.shape[1] != 2 or boxes.shape.rank != 3 or \
                    tuple(boxes.shape[1:]) != (2, 4):
                raise ValueError("PixProModel reads two views [batch, 2, h, w, C] and their "
                                 f"boxes [batch, 2, 4]. Received: views.shape={views.shape}, "
                                 f"boxes.shape={boxes.shape}")
            return {"views": tf.cast(views, tf.float32), "boxes": tf.cast(boxes, tf.float32)}
        x = tf.convert_to_tensor(x)
        if x.shape.rank == 5:
            raise ValueError(
                "PixProModel matches locations across views by their crop boxes: feed images "
                "[batch, H, W, C] (the model crops them) or {'views': ..., 'boxes': ...} "
                f"(augment.CropViews in the pipeline). Received views without boxes: "
                f"x.shape={x.shape}")
        if x.shape.rank != 4:
            raise ValueError("PixProModel expects images [batch, H, W, C]. "
                             f"Received: x.shape={x.shape}")
        return self.crop_views(x, training=True)

    def _locations(self, network, flat, training):
        """`[n, h * w, C]` of a feature map and its grid `(h, w)`."""
        spatial = network(flat, training=training)
        if isinstance(spatial, (list, tuple)):
            spatial, pooled = spatial
        else:
            pooled = None
        h, w = spatial.shape[1], spatial.shape[2]
        if h is None or w is None:
            raise ValueError("PixProModel needs the feature map's size known when the step is "
                             f"traced. Received a map of shape {spatial.shape}")
        n = tf.shape(spatial)[0]
        return tf.reshape(spatial, [n, h * w, spatial.shape[-1]]), pooled, (h, w)

    def forward(self, inputs, training):
        views, boxes = inputs["views"], inputs["boxes"]
        shape = tf.shape(views)
        b = shape[0]
        flat = tf.reshape(views, tf.concat([[b * 2], shape[2:]], 0))
        local, pooled, grid = self._locations(self.online, flat, training)
        projections = self.head(local, training=training)                    # [2b, L, D]
        predictions = self.propagation(projections, training=training)
        target_local, _, _ = self._locations(self.target_map, flat, training)
        targets = tf.stop_gradient(self.target_head(target_local, training=training))
        locations, dim = grid[0] * grid[1], projections.shape[-1]

        def per_view(t, *rest):
            return tf.reshape(t, [b, 2, *rest])

        return {"features": per_view(pooled, pooled.shape[-1]),
                "projections": per_view(tf.reduce_mean(projections, axis=1), dim),
                "predictions": per_view(predictions, locations, dim),
                "targets": per_view(targets, locations, dim),
                "positives": pixel_positive_mask(boxes[:, 0], boxes[:, 1], grid,
                                                 self.threshold)}

    def contrastive_loss(self, x, y, out, sample_weight, training):
        p = tf.cast(out["predictions"], tf.float32)
        t = tf.cast(out["targets"], tf.float32)
        mask = out["positives"]
        return (self.loss(t[:, 1], p[:, 0], sample_weight=sample_weight, positives=mask)
                + self.loss(t[:, 0], p[:, 1], sample_weight=sample_weight,
                            positives=tf.transpose(mask, [0, 2, 1])))

    def call(self, inputs, training=False):
        """Images `[batch, H, W, C]` -> the projector's output averaged over
        the feature map's locations, `[batch, D]`; views `[batch, V, H, W,
        C]` (or `{"views", "boxes"}`) -> `[batch, V, D]`."""
        x = tf.convert_to_tensor(inputs["views"] if isinstance(inputs, dict) else inputs)
        if x.shape.rank == 5:
            shape = tf.shape(x)
            flat = tf.reshape(x, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))
            out = self.call(flat, training=training)
            return tf.reshape(out, [shape[0], shape[1], out.shape[-1]])
        local, _, _ = self._locations(self.online, x, training)
        return tf.reduce_mean(self.head(local, training=training), axis=1)

    def get_config(self):
        config = super().get_config()
        config.pop("views", None)
        config.update({"threshold": self.threshold, "gamma": self.propagation.gamma,
                       "transform_layers": self.propagation.transform_layers,
                       "view_size": list(self.view_size), "seed": self.seed})
        return config

