"""timm's RandAugment, drawn for each image, with PIL's operations."""

import math

import keras
import tensorflow as tf

from supcon_tf.augment.layers import _on_batch

_PACKAGE = "supcon_tf"

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
