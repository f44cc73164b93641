"""Augmentation layers and recipes for contrastive learning.

Everything here is a Keras layer that works on batches, inside `tf.data`
(`ds.batch(n).map(layer)`) and inside a model. Random layers take `seed`.
Images are float in `[0, 255]` (uint8 input is cast).

References: Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations" (SimCLR), ICML 2020; Khosla et al., "Supervised Contrastive
Learning", NeurIPS 2020.
"""

import math

import keras
import tensorflow as tf

from supcon_tf._serialization import from_config_with_objects, serialize

_PACKAGE = "supcon_tf"


def _pair(value, name):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a pair of numbers (low, high). Received: {name}={value!r}"
        ) from None
    if not 0 < low <= high:
        raise ValueError(f"`{name}` must satisfy 0 < low <= high. Received: {name}={value!r}")
    return low, high


def _sample_coords(start, end, n_out, n_in):
    """`[batch, n_out]` source coordinates of `tf.image.crop_and_resize` for
    box edges `start`, `end` (fractions of the image, `[batch]`), clipped to
    the image."""
    span = tf.cast(n_in, tf.float32) - 1.0
    if n_out > 1:
        steps = tf.range(n_out, dtype=tf.float32) / float(n_out - 1)
        coords = (start * span)[:, None] + steps[None, :] * ((end - start) * span)[:, None]
    else:
        coords = (0.5 * (start + end) * span)[:, None]
    return tf.clip_by_value(coords, 0.0, span)


def _on_batch(images, fn):
    """`fn` on `images` as a batch: an unbatched image `[H, W, C]` goes
    through as a batch of one and comes back unbatched."""
    images = tf.convert_to_tensor(images)
    if images.shape.rank == 3:
        return fn(images[None])[0]
    return fn(images)


def crop_and_resize(images, boxes, size, method="bilinear"):
    """`tf.image.crop_and_resize(images, boxes, range(batch), size, method)`
    (one box per image, inside the image) written with gathers, so that it
    also compiles with XLA (`jit_compile=True`), which has no CropAndResize
    kernel. Values agree with TensorFlow's op to float32 round-off."""
    height, width = size
    shape = tf.shape(images)
    ys = _sample_coords(boxes[:, 0], boxes[:, 2], height, shape[1])
    xs = _sample_coords(boxes[:, 1], boxes[:, 3], width, shape[2])
    if method == "nearest":
        rows = tf.gather(images, tf.cast(tf.floor(ys + 0.5), tf.int32), axis=1, batch_dims=1)
        return tf.gather(rows, tf.cast(tf.floor(xs + 0.5), tf.int32), axis=2, batch_dims=1)
    y0, x0 = tf.floor(ys), tf.floor(xs)
    wy, wx = (ys - y0)[:, :, None, None], (xs - x0)[:, None, :, None]
    y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    y1 = tf.minimum(y0 + 1, shape[1] - 1)
    x1 = tf.minimum(x0 + 1, shape[2] - 1)
    top = tf.gather(images, y0, axis=1, batch_dims=1)
    bottom = tf.gather(images, y1, axis=1, batch_dims=1)
    rows = top + (bottom - top) * wy
    left = tf.gather(rows, x0, axis=2, batch_dims=1)
    right = tf.gather(rows, x1, axis=2, batch_dims=1)
    return left + (right - left) * wx


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomResizedCrop(keras.layers.Layer):
    """Crops a random area and aspect ratio of each image, resized to a fixed size.

    As torchvision's `RandomResizedCrop` (used by SimCLR and SupCon): each image
    gets its own crop whose area is a fraction in `scale` of the image and whose
    aspect ratio (width / height) is log-uniform in `ratio`; ten draws are tried
    per image and the first that fits is used, else a central crop with the
    ratio clipped into range. Vectorised (the crops are gathers with the
    arithmetic of `tf.image.crop_and_resize`, which also compile with XLA).
    At inference (`training=False`) images are only resized.

    Args:
        height: Output height.
        width: Output width.
        scale: Range of the crop's area as a fraction of the image.
            Defaults to (0.08, 1.0).
        ratio: Range of the crop's aspect ratio. Defaults to (3/4, 4/3).
        interpolation: `"bilinear"` or `"nearest"`. Defaults to `"bilinear"`.
        seed: Integer seed. Defaults to None.

    Example:

    >>> layer = RandomResizedCrop(24, 24, scale=(0.2, 1.0), seed=0)
    >>> layer(keras.ops.ones((2, 32, 32, 3)), training=True).shape
    TensorShape([2, 24, 24, 3])
    """

    def __init__(self, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 interpolation="bilinear", seed=None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer. Received: {name}={value!r}")
        self.height, self.width = height, width
        self.scale = _pair(scale, "scale")
        if self.scale[1] > 1:
            raise ValueError(f"`scale` must lie in (0, 1]. Received: scale={scale!r}")
        self.ratio = _pair(ratio, "ratio")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError("`interpolation` must be 'bilinear' or 'nearest'. "
                             f"Received: interpolation={interpolation!r}")
        self.interpolation = interpolation
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._attempts = 10

    def _boxes(self, batch, image_height, image_width):
        shape = (batch, self._attempts)
        area = keras.random.uniform(shape, self.scale[0], self.scale[1],
                                    seed=self.seed_generator)
        log_ratio = keras.random.uniform(
            shape, math.log(self.ratio[0]), math.log(self.ratio[1]),
            seed=self.seed_generator)
        aspect = tf.exp(log_ratio) * image_height / image_width  # in pixels
        # Crop height / width as fractions of the image's.
        crop_w = tf.sqrt(area * aspect)
        crop_h = tf.sqrt(area / aspect)
        fits = tf.logical_and(crop_w <= 1.0, crop_h <= 1.0)
        first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
        any_fit = tf.reduce_any(fits, axis=1)
        pick = lambda t: tf.gather(t, first, axis=1, batch_dims=1)  # noqa: E731
        # Fallback: a central crop of the largest box with a clipped ratio.
        in_ratio = tf.clip_by_value(image_width / image_height, self.ratio[0],
                                    self.ratio[1])
        fb_w = tf.minimum(1.0, in_ratio * image_height / image_width)
        fb_h = tf.minimum(1.0, image_width / (in_ratio * image_height))
        crop_w = tf.where(any_fit, pick(crop_w), fb_w)
        crop_h = tf.where(any_fit, pick(crop_h), fb_h)
        offsets = keras.random.uniform((batch, 2), seed=self.seed_generator)
        top = tf.where(any_fit, offsets[:, 0] * (1.0 - crop_h), (1.0 - crop_h) / 2)
        left = tf.where(any_fit, offsets[:, 1] * (1.0 - crop_w), (1.0 - crop_w) / 2)
        return tf.stack([top, left, top + crop_h, left + crop_w], axis=1)

    def call(self, images, training=True):
        images = tf.convert_to_tensor(images)
        unbatched = images.shape.rank == 3
        if unbatched:
            images = images[None]
        images = tf.cast(images, self.compute_dtype)
        shape = tf.shape(images)
        if training:
            boxes = self._boxes(shape[0], tf.cast(shape[1], tf.float32),
                                tf.cast(shape[2], tf.float32))
            out = crop_and_resize(tf.cast(images, tf.float32), boxes,
                                  (self.height, self.width), self.interpolation)
        else:
            out = tf.image.resize(images, (self.height, self.width),
                                  method=self.interpolation)
        out = tf.cast(out, self.compute_dtype)
        return out[0] if unbatched else out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-3]) + (self.height, self.width, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"height": self.height, "width": self.width,
                       "scale": self.scale, "ratio": self.ratio,
                       "interpolation": self.interpolation, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomApply(keras.layers.Layer):
    """Applies `layer` to each image independently with probability `rate`.

    Vectorised: the layer runs on the whole batch and each image keeps the
    transformed or the original version.

    Args:
        layer: A Keras layer mapping a batch to a batch of the same shape.
        rate: Probability of applying it to an image. Defaults to 0.5.
        seed: Integer seed. Defaults to None.
    """

    def __init__(self, layer, rate=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"`layer` must be a Keras layer. Received: layer={layer!r}")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"`rate` must be in [0, 1]. Received: rate={rate!r}")
        self.layer = layer
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        def apply(batch):
            draw = keras.random.uniform((tf.shape(batch)[0], 1, 1, 1), seed=self.seed_generator)
            return tf.where(draw < self.rate, tf.cast(self.layer(batch, training=True),
                                                      batch.dtype), batch)

        return _on_batch(images, apply)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"layer": serialize(self.layer), "rate": self.rate,
                       "seed": self.seed})
        return config

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config, ["layer"])


# timm's RandAugment operations (`timm.data.auto_augment._RAND_TRANSFORMS`),
# in its order, and the magnitude scale of its levels.
RAND_AUGMENT_OPS = ("auto_contrast", "equalize", "invert", "rotate", "posterize", "solarize",
                    "solarize_add", "color", "contrast", "brightness", "sharpness",
                    "shear_x", "shear_y", "translate_x", "translate_y")
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_LEVEL_MAX = 10.0


def _affine(images, matrices, fill_value):
    """Bilinear warp of `images` `[B, H, W, C]` as PIL's AFFINE transform:
    the output point (x, y) reads the input at `(a0 x + a1 y + a2, b0 x + b1 y
    + b2)`, `matrices` `[B, 6]`, in coordinates where pixel (i, j) covers
    [j, j + 1) x [i, i + 1); outside the image reads `fill_value`. Gathers
    only, so it compiles with XLA."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32) + 0.5,
                         tf.range(width, dtype=tf.float32) + 0.5, indexing="ij")
    xs, ys = tf.reshape(xs, [1, -1]), tf.reshape(ys, [1, -1])
    m = [matrices[:, k:k + 1] for k in range(6)]
    src_x = m[0] * xs + m[1] * ys + m[2]
    src_y = m[3] * xs + m[4] * ys + m[5]
    w_f, h_f = tf.cast(width, tf.float32), tf.cast(height, tf.float32)
    # As PIL: a point outside the image reads the fill; inside, its
    # neighbours past the edge repeat the edge pixel.
    inside = (src_x >= 0) & (src_x < w_f) & (src_y >= 0) & (src_y < h_f)
    src_x, src_y = src_x - 0.5, src_y - 0.5                # pixel centres at index + 0.5
    x0, y0 = tf.floor(src_x), tf.floor(src_y)
    flat = tf.reshape(images, [shape[0], height * width, shape[3]])
    out = 0.0
    for dy in (0.0, 1.0):
        for dx in (0.0, 1.0):
            cx, cy = x0 + dx, y0 + dy
            weight = (1.0 - tf.abs(src_x - cx)) * (1.0 - tf.abs(src_y - cy))
            index = tf.cast(tf.clip_by_value(cy, 0.0, h_f - 1) * w_f
                            + tf.clip_by_value(cx, 0.0, w_f - 1), tf.int32)
            out += weight[..., None] * tf.gather(flat, index, axis=1, batch_dims=1)
    out = tf.where(inside[..., None], out, tf.cast(fill_value, images.dtype))
    return tf.reshape(out, shape)


def _blend(degenerate, images, factor):
    """PIL's `ImageEnhance` blend: `degenerate + factor * (images - degenerate)`."""
    return tf.clip_by_value(degenerate + factor[:, None, None, None] * (images - degenerate),
                            0.0, 255.0)


def _gray(images):
    if images.shape[-1] == 1:
        return images
    return tf.reduce_sum(images * tf.constant([0.299, 0.587, 0.114]), -1, keepdims=True)


def _auto_contrast(images):
    low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    span = high - low
    stretched = (images - low) * 255.0 / tf.maximum(span, 1e-6)
    return tf.where(span > 0, stretched, images)


def _equalize(images):
    """PIL's `ImageOps.equalize`, per image and channel."""
    shape = tf.shape(images)
    rows = shape[0] * shape[3]
    values = tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.int32)
    values = tf.reshape(tf.transpose(values, [0, 3, 1, 2]), [rows, -1])        # [B*C, H*W]
    ids = values + 256 * tf.range(rows)[:, None]
    hist = tf.reshape(tf.math.unsorted_segment_sum(tf.ones_like(ids), ids, rows * 256),
                      [rows, 256])
    top = tf.reduce_max(values, axis=1)                      # the last non-empty bin
    step = (tf.reduce_sum(hist, 1) - tf.gather(hist, top, axis=1, batch_dims=1)) // 255
    cumulative = tf.cumsum(hist, axis=1, exclusive=True)
    safe = tf.maximum(step, 1)[:, None]
    lut = tf.minimum((cumulative + safe // 2) // safe, 255)
    mapped = tf.gather(lut, values, axis=1, batch_dims=1)
    mapped = tf.where(step[:, None] > 0, mapped, values)
    mapped = tf.reshape(mapped, [shape[0], shape[3], shape[1], shape[2]])
    return tf.cast(tf.transpose(mapped, [0, 2, 3, 1]), images.dtype)


def _smooth(images):
    """PIL's SMOOTH filter (3x3, centre 5, the rest 1, over 13), border pixels
    kept, as `ImageEnhance.Sharpness` uses it."""
    channels = images.shape[-1]
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "SAME")
    shape = tf.shape(images)
    rows = tf.range(shape[1])[None, :, None, None]
    cols = tf.range(shape[2])[None, None, :, None]
    interior = (rows > 0) & (rows < shape[1] - 1) & (cols > 0) & (cols < shape[2] - 1)
    return tf.where(interior, smooth, images)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandAugment(keras.layers.Layer):
    """RandAugment as timm's `rand-n{num_ops}-m{magnitude}-mstd{magnitude_std}`
    (the InfoMin recipe's `rand-n2-m10-mstd0.5`), drawn for each image.

    Each image gets `num_ops` operations drawn uniformly, with replacement,
    from `ops`; each is applied with probability `rate` at a magnitude drawn
    from N(magnitude, magnitude_std) and clipped to [0, 10], mapped to its
    argument as timm does (rotate up to +/-30 degrees, shear +/-0.3,
    translate +/-45% of the side, posterize to int(4 m / 10) bits, solarize
    above int(25.6 m), solarize-add int(11 m) below 128, colour / contrast /
    brightness / sharpness enhance factor 0.1 + 0.18 m; the geometric ones
    with a random sign). `keras.layers.RandAugment` differs in two ways
    that matter here: it draws its operations once per call, so a whole
    batch shares them, and one `factor` sets every operation's range.

    Operations follow PIL's definitions on [0, 255] images (the values stay
    floats; equalize and posterize round to integers first). On one channel
    `color` is the identity, as PIL's is on an "L" image.

    Args:
        num_ops: Operations per image, >= 1. Defaults to 2.
        magnitude: Mean magnitude in [0, 10]. Defaults to 10.
        magnitude_std: Standard deviation of the magnitude, >= 0. Defaults to 0.5.
        rate: Probability of applying each drawn operation. Defaults to 0.5.
        ops: Names from `RAND_AUGMENT_OPS` to draw from. Defaults to all 15.
        fill_value: Value of pixels that geometric operations move in from
            outside the image. Defaults to 128 (timm's; PyContrast passes the
            data's mean pixel).
        seed: Integer seed. Defaults to None.
    """

    def __init__(self, num_ops=2, magnitude=10.0, magnitude_std=0.5, rate=0.5, ops=None,
                 fill_value=128.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_ops, bool) or not isinstance(num_ops, int) or num_ops < 1:
            raise ValueError(f"`num_ops` must be an integer >= 1. Received: num_ops={num_ops!r}")
        for name, value, high in (("magnitude", magnitude, _LEVEL_MAX),
                                  ("magnitude_std", magnitude_std, float("inf")),
                                  ("rate", rate, 1.0), ("fill_value", fill_value, 255.0)):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not 0 <= value <= high):
                raise ValueError(f"`{name}` must be a number in [0, {high}]. "
                                 f"Received: {name}={value!r}")
        ops = RAND_AUGMENT_OPS if ops is None else tuple(ops)
        unknown = [op for op in ops if op not in RAND_AUGMENT_OPS]
        if unknown or not ops:
            raise ValueError(f"`ops` must be a non-empty list of names from {RAND_AUGMENT_OPS}. "
                             f"Received: ops={ops!r}")
        self.num_ops, self.ops, self.seed = num_ops, ops, seed
        self.magnitude, self.magnitude_std = float(magnitude), float(magnitude_std)
        self.rate, self.fill_value = float(rate), float(fill_value)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _one_op(self, images):
        batch = tf.shape(images)[0]
        pick = keras.random.randint((batch,), 0, len(self.ops), seed=self.seed_generator)
        apply = keras.random.uniform((batch,), seed=self.seed_generator) < self.rate
        level = tf.clip_by_value(
            self.magnitude + self.magnitude_std * keras.random.normal(
                (batch,), seed=self.seed_generator), 0.0, _LEVEL_MAX) / _LEVEL_MAX
        sign = tf.where(keras.random.uniform((batch,), seed=self.seed_generator) < 0.5,
                        -1.0, 1.0)
        chosen = {op: apply & tf.equal(pick, k) for k, op in enumerate(self.ops)}
        shape = tf.shape(images)
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        one, zero = tf.ones_like(level), tf.zeros_like(level)
        # Geometric operations: one warp with each image's matrix (identity if none).
        theta = -sign * level * 30.0 * math.pi / 180.0       # PIL rotates counter-clockwise
        cx, cy = width / 2.0, height / 2.0
        cos, sin = tf.cos(theta), tf.sin(theta)
        shear, shift = sign * level * 0.3, sign * level * 0.45
        matrices = {
            "rotate": [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy],
            "shear_x": [one, shear, zero, zero, one, zero],
            "shear_y": [one, zero, zero, shear, one, zero],
            "translate_x": [one, zero, shift * width, zero, one, zero],
            "translate_y": [one, zero, zero, zero, one, shift * height],
        }
        matrix = tf.stack([one, zero, zero, zero, one, zero], axis=1)
        geometric = tf.zeros_like(apply)
        for op in _GEOMETRIC:
            if op in chosen:
                matrix = tf.where(chosen[op][:, None], tf.stack(matrices[op], axis=1), matrix)
                geometric |= chosen[op]
        out = tf.where(geometric[:, None, None, None],
                       _affine(images, matrix, self.fill_value), images)
        # Pixel operations, each computed only if it is among `ops`.
        factor = 0.1 + 1.8 * level
        step = tf.pow(2.0, 8.0 - tf.floor(4.0 * level))[:, None, None, None]
        threshold = tf.floor(256.0 * level)[:, None, None, None]
        add = tf.floor(110.0 * level)[:, None, None, None]
        gray_mean = tf.floor(tf.reduce_mean(_gray(images), axis=[1, 2, 3], keepdims=True) + 0.5)
        pixel = {
            "auto_contrast": lambda: _auto_contrast(images),
            "equalize": lambda: _equalize(images),
            "invert": lambda: 255.0 - images,
            "posterize": lambda: tf.floor(tf.round(images) / step) * step,
            "solarize": lambda: tf.where(images >= threshold, 255.0 - images, images),
            "solarize_add": lambda: tf.where(images < 128.0,
                                             tf.minimum(images + add, 255.0), images),
            "color": lambda: _blend(tf.broadcast_to(_gray(images), tf.shape(images)),
                                    images, factor),
            "contrast": lambda: _blend(gray_mean, images, factor),
            "brightness": lambda: _blend(tf.zeros_like(images), images, factor),
            "sharpness": lambda: _blend(_smooth(images), images, factor),
        }
        for op, fn in pixel.items():
            if op in chosen:
                out = tf.where(chosen[op][:, None, None, None], fn(), out)
        return out

    def call(self, images, training=True):
        if not training:
            return images
        def apply(batch):
            out = tf.clip_by_value(tf.cast(batch, tf.float32), 0.0, 255.0)
            for _ in range(self.num_ops):
                out = self._one_op(out)
            return tf.cast(tf.clip_by_value(out, 0.0, 255.0), batch.dtype)

        return _on_batch(images, apply)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_ops": self.num_ops, "magnitude": self.magnitude,
                       "magnitude_std": self.magnitude_std, "rate": self.rate,
                       "ops": list(self.ops), "fill_value": self.fill_value,
                       "seed": self.seed})
        return config


def rotate90(images, k):
    """Each image of `images` `[B, H, H, C]` turned counter-clockwise by
    `k[b]` quarter turns (`k` int `[B]`, any integers). Square images only."""
    images = tf.convert_to_tensor(images)
    if images.shape[1] is not None and images.shape[1] != images.shape[2]:
        raise ValueError("Quarter turns keep the shape of square images only. "
                         f"Received: images.shape={images.shape}")
    k = tf.math.floormod(tf.cast(k, tf.int32), 4)[:, None, None, None]
    turned, out = images, images
    for quarter in (1, 2, 3):
        turned = tf.transpose(tf.reverse(turned, axis=[2]), [0, 2, 1, 3])    # one more turn
        out = tf.where(tf.equal(k, quarter), turned, out)
    return out


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomRotate90(keras.layers.Layer):
    """Turns each image by 0, 90, 180 or 270 degrees, drawn uniformly per
    image (square images). A rotation-invariant view for contrastive
    learning; LooC (`supcon_tf.models.LooCModel`) uses it as a family.

    Args:
        seed: Integer seed. Defaults to None.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        return _on_batch(images, lambda batch: rotate90(batch, keras.random.randint(
            (tf.shape(batch)[0],), 0, 4, seed=self.seed_generator)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MultiView(keras.layers.Layer):
    """Makes `views` independent augmentations of each image.

    Input `[batch, H, W, C]`, output `[batch, views, H', W', C]`; each view is
    an independent draw of `augmenter` (a single call on the tiled batch, so
    the work is vectorised).

    Args:
        augmenter: A Keras layer, e.g. `supcon_tf.augment.supcon(shape)`.
        views: Number of views, >= 1. Defaults to 2.

    Example:

    >>> mv = MultiView(supcon((28, 28, 1), seed=0), views=2)
    >>> mv(keras.ops.zeros((4, 28, 28, 1))).shape
    TensorShape([4, 2, 28, 28, 1])
    """

    def __init__(self, augmenter, views=2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(augmenter, keras.layers.Layer):
            raise TypeError(
                f"`augmenter` must be a Keras layer. Received: augmenter={augmenter!r}")
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ValueError(f"`views` must be an integer >= 1. Received: views={views!r}")
        self.augmenter = augmenter
        self.views = views

    def call(self, images, training=True):
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4:
            raise ValueError("MultiView expects images [batch, H, W, C]. "
                             f"Received: images.shape={images.shape}")
        batch = tf.shape(images)[0]
        tiled = tf.tile(images, [self.views, 1, 1, 1])        # view-major
        out = self.augmenter(tiled, training=training)
        out = tf.reshape(out, tf.concat([[self.views, batch], tf.shape(out)[1:]], 0))
        return tf.transpose(out, [1, 0, 2, 3, 4])

    def compute_output_shape(self, input_shape):
        inner = self.augmenter.compute_output_shape(input_shape)
        return (inner[0], self.views) + tuple(inner[1:])

    def get_config(self):
        config = super().get_config()
        config.update({"augmenter": serialize(self.augmenter), "views": self.views})
        return config

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config, ["augmenter"])


def _check_shape(image_shape):
    try:
        height, width, channels = (int(v) for v in image_shape)
    except (TypeError, ValueError):
        raise ValueError("`image_shape` must be (height, width, channels). "
                         f"Received: image_shape={image_shape!r}") from None
    if channels not in (1, 3) or height < 1 or width < 1:
        raise ValueError("`image_shape` must be (height, width, 1 or 3). "
                         f"Received: image_shape={image_shape!r}")
    return height, width, channels


def _seed(seed, offset):
    return None if seed is None else seed + offset


def _color(channels, brightness, contrast, saturation, hue, seed):
    """Colour jitter; on one channel only brightness and contrast exist."""
    if channels == 3:
        return keras.layers.RandomColorJitter(
            value_range=(0, 255), brightness_factor=brightness,
            contrast_factor=contrast, saturation_factor=saturation,
            hue_factor=hue, seed=seed)
    return keras.Sequential([
        keras.layers.RandomBrightness(brightness, value_range=(0, 255), seed=seed),
        keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=_seed(seed, 1)),
    ])


# Keras's brightness factor is at most 1 and the simclr recipe uses 0.8 * s.
MAX_COLOR_STRENGTH = 1.25


def _crop_flip_color(shape, crop_scale, jitter, seed):
    """The recipes' first layers: resized crop, horizontal flip and, unless
    `jitter` is None, colour jitter `(b, c, s, h)` with p=0.8."""
    height, width, channels = shape
    layers = [RandomResizedCrop(height, width, scale=crop_scale, seed=seed),
              keras.layers.RandomFlip("horizontal", seed=_seed(seed, 1))]
    if jitter is not None:
        layers.append(RandomApply(_color(channels, *jitter, _seed(seed, 2)),
                                  rate=0.8, seed=_seed(seed, 3)))
    return layers


def _blur(shape, seed):
    """SimCLR's Gaussian blur with p=0.5 (kernel a tenth of the side), for
    images of 64 pixels or more; none below."""
    side = min(shape[:2])
    if side < 64:
        return []
    return [RandomApply(keras.layers.RandomGaussianBlur(
        factor=1.0, kernel_size=max(3, (side // 10) | 1), sigma=(0.1, 2.0),
        seed=_seed(seed, 5)), rate=0.5, seed=_seed(seed, 6))]


def simclr(image_shape, strength=1.0, crop_scale=(0.08, 1.0), seed=None):
    """SimCLR's augmentation: resized crop, flip, colour distortion (p=0.8),
    grayscale (p=0.2), and Gaussian blur (p=0.5) for images of 64 pixels or more.

    Colour jitter uses Keras's layers with factors `(0.8, 0.8, 0.8, 0.2) *
    strength`; on single-channel images only brightness and contrast apply and
    grayscale is skipped.

    Args:
        image_shape: `(height, width, channels)`, channels 1 or 3.
        strength: Colour distortion strength s in [0, 1.25] (at 1.25 the
            brightness shift spans the whole value range). Defaults to 1.0.
        crop_scale: Area range of the resized crop. Defaults to (0.08, 1.0).
        seed: Integer seed. Defaults to None.

    Returns:
        A `keras.Sequential` mapping images in [0, 255] to augmented images.
    """
    height, width, channels = _check_shape(image_shape)
    if (isinstance(strength, bool) or not isinstance(strength, (int, float))
            or not 0 <= strength <= MAX_COLOR_STRENGTH):
        raise ValueError(f"`strength` must be a number in [0, {MAX_COLOR_STRENGTH}] (the "
                         f"brightness factor 0.8 * strength is at most 1 in Keras's colour "
                         f"layers). Received: strength={strength!r}")
    s = float(strength)
    jitter = (0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5)) if s > 0 else None
    layers = _crop_flip_color((height, width, channels), crop_scale, jitter, seed)
    if channels == 3:
        layers.append(keras.layers.RandomGrayscale(0.2, seed=_seed(seed, 4)))
    layers += _blur((height, width), seed)
    return keras.Sequential(layers, name="simclr_augment")


def supcon(image_shape, crop_scale=(0.2, 1.0), seed=None):
    """The SupCon paper's CIFAR recipe: resized crop with scale (0.2, 1),
    horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale
    with p=0.2. On single-channel images colour jitter is brightness and
    contrast only, and grayscale is skipped.

    Args:
        image_shape: `(height, width, channels)`, channels 1 or 3.
        crop_scale: Area range of the resized crop. Defaults to (0.2, 1.0).
        seed: Integer seed. Defaults to None.

    Returns:
        A `keras.Sequential` mapping images in [0, 255] to augmented images.
    """
    shape = _check_shape(image_shape)
    layers = _crop_flip_color(shape, crop_scale, (0.4, 0.4, 0.4, 0.1), seed)
    if shape[2] == 3:
        layers.append(keras.layers.RandomGrayscale(0.2, seed=_seed(seed, 4)))
    return keras.Sequential(layers, name="supcon_augment")


def infomin(image_shape, crop_scale=(0.2, 1.0), magnitude=10.0, fill_value=128.0, seed=None):
    """InfoMin's augmentation (Tian et al., NeurIPS 2020; PyContrast's
    "RandAug" / aug "D"): resized crop, flip, colour jitter (0.8, 0.8, 0.8,
    0.2) with p=0.8, Gaussian blur (p=0.5) for images of 64 pixels or more,
    RandAugment `rand-n2-m{magnitude}-mstd0.5` drawn per image
    (`RandAugment`), grayscale with p=0.2.

    On single-channel images colour jitter is brightness and contrast only and
    grayscale is skipped; blur is skipped below 64 pixels, as in `simclr`.

    Args:
        image_shape: `(height, width, channels)`, channels 1 or 3.
        crop_scale: Area range of the resized crop. Defaults to (0.2, 1.0)
            (the paper's with a queue; 0.08 with a memory bank).
        magnitude: RandAugment's mean magnitude in [0, 10]. Defaults to 10.
        fill_value: RandAugment's fill for pixels moved in from outside.
            Defaults to 128.
        seed: Integer seed. Defaults to None.

    Returns:
        A `keras.Sequential` mapping images in [0, 255] to augmented images.
    """
    shape = _check_shape(image_shape)
    layers = _crop_flip_color(shape, crop_scale, (0.8, 0.8, 0.8, 0.2), seed) + _blur(shape, seed)
    layers.append(RandAugment(2, magnitude=magnitude, magnitude_std=0.5,
                              fill_value=fill_value, seed=_seed(seed, 7)))
    if shape[2] == 3:
        layers.append(keras.layers.RandomGrayscale(0.2, seed=_seed(seed, 4)))
    return keras.Sequential(layers, name="infomin_augment")


RECIPES = {"supcon": supcon, "simclr": simclr, "infomin": infomin}


def from_spec(spec, image_shape, seed=None, **overrides):
    """The augmentation of a recipe's `augment` entry (`supcon_tf.methods`):
    `{"recipe": "supcon" | "simclr" | "infomin", "crop_min_scale": float or
    None, "color_strength": float or None, "magnitude": float or None,
    "rotate90": bool}` (None keeps the recipe's default; `color_strength` is
    the simclr recipe's, `magnitude` the infomin recipe's RandAugment
    magnitude; `rotate90` adds `RandomRotate90` last); `overrides` go to the
    recipe function as they are."""
    name = spec.get("recipe", "supcon")
    if name not in RECIPES:
        raise ValueError(f"The augmentation recipe must be one of {sorted(RECIPES)}. "
                         f"Received: recipe={name!r}")
    args = {}
    if spec.get("crop_min_scale") is not None:
        args["crop_scale"] = (spec["crop_min_scale"], 1.0)
    for key, arg, owner in (("color_strength", "strength", "simclr"),
                            ("magnitude", "magnitude", "infomin")):
        if spec.get(key) is not None:
            if name != owner:
                raise ValueError(f"`{key}` needs the {owner!r} recipe. "
                                 f"Received: recipe={name!r}")
            args[arg] = spec[key]
    layer = RECIPES[name](image_shape, seed=seed, **{**args, **overrides})
    if spec.get("rotate90"):
        layer.add(RandomRotate90(seed=_seed(seed, 8), name="rotate90"))
    return layer
