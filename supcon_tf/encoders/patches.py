"""An image encoder made of a patch encoder: the image cut into a grid of
overlapping patches, each encoded on its own, the encodings averaged (CPC's
representation)."""

import keras

from supcon_tf._serialization import from_config_with_objects, serialize

_PACKAGE = "supcon_tf"


def grid_size(image_size, patch_size, stride):
    """Patches along one side: `(image_size - patch_size) // stride + 1`."""
    if image_size < patch_size:
        raise ValueError(f"A patch of {patch_size} does not fit an image side of "
                         f"{image_size}. Received: patch_size={patch_size}")
    return (image_size - patch_size) // stride + 1


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PatchGrid(keras.layers.Layer):
    """Images `[batch, H, W, C]` -> patches `[batch, gh, gw, size, size, C]`,
    patch `(i, j)` the image's pixels from row `i * stride` and column
    `j * stride` (no padding: `g = (H - size) // stride + 1`).

    Args:
        size: The patches' side, >= 1.
        stride: The step between patches, >= 1 (below `size`: overlapping).

    Example:

    >>> tuple(PatchGrid(8, 4)(keras.ops.ones((2, 28, 28, 1))).shape)
    (2, 6, 6, 8, 8, 1)
    """

    def __init__(self, size, stride, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("size", size), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
        self.size, self.stride = size, stride

    def call(self, images):
        images = keras.ops.convert_to_tensor(images)
        channels = images.shape[-1]
        flat = keras.ops.image.extract_patches(images, self.size, strides=self.stride,
                                               padding="valid")
        shape = keras.ops.shape(flat)
        return keras.ops.reshape(flat, (shape[0], shape[1], shape[2], self.size, self.size,
                                        channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        gh = None if height is None else grid_size(height, self.size, self.stride)
        gw = None if width is None else grid_size(width, self.size, self.stride)
        return (batch, gh, gw, self.size, self.size, channels)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "stride": self.stride}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class OnPatches(keras.layers.Layer):
    """`patch_encoder` on every patch of a grid: `[batch, gh, gw, p, p, C]`
    -> `[batch, gh, gw, F]`, each patch on its own (one call on the
    flattened grid). With `augmenter`, each patch is augmented on its own
    while training (CPC v2's patch augmentation).

    Args:
        patch_encoder: A Keras model from patches `[n, p, p, C]` to `[n, F]`.
        augmenter: A Keras layer on patches `[n, p, p, C]` or None.
    """

    def __init__(self, patch_encoder, augmenter=None, **kwargs):
        super().__init__(**kwargs)
        self.patch_encoder, self.augmenter = patch_encoder, augmenter

    def build(self, input_shape):
        if not self.patch_encoder.built:
            self.patch_encoder.build((None, *input_shape[3:]))
        self.built = True

    def call(self, patches, training=False):
        shape = keras.ops.shape(patches)
        flat = keras.ops.reshape(patches, (-1, *patches.shape[3:]))
        if training and self.augmenter is not None:
            flat = keras.ops.cast(self.augmenter(flat, training=True), flat.dtype)
        codes = self.patch_encoder(flat, training=training)
        return keras.ops.reshape(codes, (shape[0], shape[1], shape[2], codes.shape[-1]))

    def compute_output_shape(self, input_shape):
        features = self.patch_encoder.compute_output_shape((None, *input_shape[3:]))[-1]
        return (*input_shape[:3], features)

    def get_config(self):
        return {**super().get_config(), "patch_encoder": serialize(self.patch_encoder),
                "augmenter": serialize(self.augmenter)}

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config, ["patch_encoder", "augmenter"])


def patch_grid_encoder(patch_encoder, image_shape, patch_size, stride, augmenter=None,
                       name=None):
    """An image encoder of `patch_encoder`: images `[batch, H, W, C]` -> the
    mean of their patches' encodings `[batch, F]`, through one
    `GlobalAveragePooling2D` over the grid (so `dense.feature_map` gives the
    grid of encodings `[batch, gh, gw, F]`). It shares `patch_encoder`'s
    weights.

    Args:
        patch_encoder: A Keras model from `[n, patch_size, patch_size, C]`.
        image_shape: `(H, W, C)`.
        patch_size, stride: The grid (`PatchGrid`).
        augmenter: Each patch's augmentation while training, or None.
        name: The model's name. Defaults to `"<patch encoder>_on_patches"`.
    """
    try:
        height, width, channels = (int(v) for v in image_shape)
    except (TypeError, ValueError):
        raise ValueError("`image_shape` must be (height, width, channels). "
                         f"Received: image_shape={image_shape!r}") from None
    grid_size(height, patch_size, 1)
    grid_size(width, patch_size, 1)
    images = keras.Input((height, width, channels), name="images")
    patches = PatchGrid(patch_size, stride, name="patches")(images)
    codes = OnPatches(patch_encoder, augmenter, name="encode_patches")(patches)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(codes)
    return keras.Model(images, pooled, name=name or f"{patch_encoder.name}_on_patches")
