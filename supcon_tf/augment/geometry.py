"""Views that remember where they came from: resized crops and flips with
their boxes, for methods that match locations across views (PixPro)."""

import keras
import tensorflow as tf

from supcon_tf._serialization import from_config_with_objects, serialize
from supcon_tf.augment.layers import RandomApply, RandomResizedCrop, crop_and_resize

_PACKAGE = "supcon_tf"
# Layers that change pixel values but not where a pixel is.
_PHOTOMETRIC = (keras.layers.RandomBrightness, keras.layers.RandomContrast,
                keras.layers.RandomColorJitter, keras.layers.RandomGrayscale,
                keras.layers.RandomGaussianBlur, keras.layers.Rescaling)


def _photometric(layer):
    if isinstance(layer, keras.Sequential):
        return all(_photometric(inner) for inner in layer.layers)
    if isinstance(layer, RandomApply):
        return _photometric(layer.layer)
    return isinstance(layer, _PHOTOMETRIC)


def split_geometry(augmenter):
    """`(crop, flip, photometric)` of an augmentation recipe (a
    `keras.Sequential` such as `simclr(...)`): its `RandomResizedCrop` (or
    None), whether it flips horizontally, and a `keras.Sequential` of the
    rest (or None when nothing is left).

    Raises:
        ValueError: a layer that moves pixels other than the resized crop
            and the horizontal flip (quarter turns, RandAugment's shears
            and translations), whose geometry a box cannot describe.
    """
    layers = augmenter.layers if isinstance(augmenter, keras.Sequential) else [augmenter]
    crop, flip, rest = None, False, []
    for layer in layers:
        if isinstance(layer, RandomResizedCrop) and crop is None:
            crop = layer
        elif (isinstance(layer, keras.layers.RandomFlip) and layer.mode == "horizontal"
              and not flip):
            flip = True
        elif _photometric(layer):
            rest.append(layer)
        else:
            raise ValueError(
                "Views with boxes need an augmenter whose only geometric layers are one "
                "RandomResizedCrop and one horizontal RandomFlip (the rest must change pixel "
                "values only: colour, grayscale, blur). Received a "
                f"{type(layer).__name__} layer {layer.name!r} in {augmenter.name!r}")
    return crop, flip, (keras.Sequential(rest, name=f"{augmenter.name}_photometric")
                        if rest else None)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CropViews(keras.layers.Layer):
    """`views` resized crops of each image, each flipped horizontally with
    probability 1/2 and then given `photometric`, with the box each came
    from.

    Input `[batch, H, W, C]`; output `{"views": [batch, views, height,
    width, C], "boxes": [batch, views, 4]}`, boxes `[y0, x0, y1, x1]` as
    fractions of the image (`tf.image.crop_and_resize`'s convention) with
    `x0 > x1` for a flipped view (as PixPro's `RandomHorizontalFlipCoord`):
    location `(i, j)` of an `h x w` grid over a view has its centre at
    `y0 + (i + 0.5) (y1 - y0) / h`, `x0 + (j + 0.5) (x1 - x0) / w`, flipped
    or not. At inference (`training=False`) every view is the whole image,
    resized, unflipped.

    Args:
        height, width: The views' size.
        views: Views per image, >= 1. Defaults to 2.
        scale, ratio: The crop's area and aspect ranges (`RandomResizedCrop`).
            Defaults to (0.08, 1.0) and (3/4, 4/3).
        flip: Flip horizontally with probability 1/2. Defaults to True.
        photometric: A Keras layer applied to every view after the crop
            (colour, blur), or None. It must not move pixels.
        seed: Integer seed. Defaults to None.

    Example:

    >>> out = CropViews(24, 24, seed=0)(keras.ops.ones((3, 28, 28, 1)))
    >>> tuple(out["views"].shape), tuple(out["boxes"].shape)
    ((3, 2, 24, 24, 1), (3, 2, 4))
    """

    def __init__(self, height, width, views=2, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 flip=True, photometric=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ValueError(f"`views` must be an integer >= 1. Received: views={views!r}")
        if photometric is not None:
            if not isinstance(photometric, keras.layers.Layer):
                raise TypeError("`photometric` must be a Keras layer or None. "
                                f"Received: photometric={photometric!r}")
            split_geometry(photometric)          # refuses layers that move pixels
            if not _photometric(photometric):
                raise ValueError("`photometric` must not crop or flip (CropViews does both "
                                 f"and records them). Received: {photometric.name!r}")
        self.crop = RandomResizedCrop(height, width, scale=scale, ratio=ratio, seed=seed)
        self.height, self.width, self.views = height, width, views
        self.flip, self.photometric, self.seed = bool(flip), photometric, seed
        self.flip_seed = keras.random.SeedGenerator(None if seed is None else seed + 1)

    def build(self, input_shape):
        self.built = True           # the crop holds no weights; `photometric` builds on call

    def call(self, images, training=True):
        images = tf.cast(tf.convert_to_tensor(images), tf.float32)
        if images.shape.rank != 4:
            raise ValueError("CropViews expects images [batch, H, W, C]. "
                             f"Received: images.shape={images.shape}")
        shape = tf.shape(images)
        batch = shape[0]
        tiled = tf.tile(images, [self.views, 1, 1, 1])                      # view-major
        n = batch * self.views
        if training:
            boxes = self.crop.sample_boxes(n, tf.cast(shape[1], tf.float32),
                                           tf.cast(shape[2], tf.float32))
        else:
            boxes = tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0]]), [n, 1])
        out = crop_and_resize(tiled, boxes, (self.height, self.width),
                              self.crop.interpolation)
        if training and self.flip:
            flipped = keras.random.uniform((n,), seed=self.flip_seed) < 0.5
            out = tf.where(flipped[:, None, None, None], tf.reverse(out, axis=[2]), out)
            boxes = tf.where(flipped[:, None], tf.gather(boxes, [0, 3, 2, 1], axis=1), boxes)
        if self.photometric is not None:
            out = tf.cast(self.photometric(out, training=training), tf.float32)
        out = tf.reshape(out, tf.concat([[self.views, batch], tf.shape(out)[1:]], 0))
        boxes = tf.reshape(boxes, [self.views, batch, 4])
        return {"views": tf.transpose(out, [1, 0, 2, 3, 4]),
                "boxes": tf.transpose(boxes, [1, 0, 2])}

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width,
                "views": self.views, "scale": list(self.crop.scale),
                "ratio": list(self.crop.ratio), "flip": self.flip,
                "photometric": serialize(self.photometric), "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config, ["photometric"])
