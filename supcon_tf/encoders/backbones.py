"""The CIFAR-stem ResNets, their Conv2D, and `as_encoder` (the package's
docstring says more)."""

import keras
import tensorflow as tf

_PACKAGE = "supcon_tf"

_BLOCKS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
           50: ("bottleneck", (3, 4, 6, 3))}


def _bn(name, synchronized):
    """The normalisation after a convolution: BatchNorm (`synchronized` a
    bool) or, with `synchronized="layer"`, layer norm over each sample's
    map (`GroupNormalization` with one group: statistics over H, W and C,
    a scale and offset per channel)."""
    if synchronized == "layer":
        return keras.layers.GroupNormalization(groups=1, epsilon=1e-5, name=name)
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5,
                                           synchronized=synchronized, name=name)


def _conv(filters, kernel, stride, name):
    # supcon_tf.encoders.Conv2D: Keras's Conv2D with a faster input gradient for the 3x3
    # stride-1 convolutions (Conv2D, below).
    return Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                          kernel_initializer="he_normal", name=name)


def _basic_block(x, filters, stride, name, sync):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, stride, f"{name}_short_conv")(x)
        shortcut = _bn(f"{name}_short_bn", sync)(shortcut)
    y = _conv(filters, 3, stride, f"{name}_conv1")(x)
    y = keras.layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1", sync)(y))
    y = _bn(f"{name}_bn2", sync)(_conv(filters, 3, 1, f"{name}_conv2")(y))
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def _bottleneck_block(x, filters, stride, name, sync):
    out_filters = 4 * filters
    shortcut = x
    if stride != 1 or x.shape[-1] != out_filters:
        shortcut = _conv(out_filters, 1, stride, f"{name}_short_conv")(x)
        shortcut = _bn(f"{name}_short_bn", sync)(shortcut)
    y = _conv(filters, 1, 1, f"{name}_conv1")(x)
    y = keras.layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1", sync)(y))
    y = _conv(filters, 3, stride, f"{name}_conv2")(y)
    y = keras.layers.ReLU(name=f"{name}_relu2")(_bn(f"{name}_bn2", sync)(y))
    y = _bn(f"{name}_bn3", sync)(_conv(out_filters, 1, 1, f"{name}_conv3")(y))
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def resnet(depth, input_shape=(32, 32, 3), width=1.0, synchronized_bn=False,
           rescale=True, name=None, norm="batch"):
    """A CIFAR-stem ResNet encoder returning the pooled feature vector.

    Args:
        depth: 18, 34 or 50.
        input_shape: `(height, width, channels)` of the images, at least 8x8;
            height and width may be None for images of several sizes (SwAV's
            multi-crop). Defaults to (32, 32, 3).
        width: Channel multiplier (0.25 gives 16-32-64-128 channels for
            ResNet-18). Defaults to 1.0.
        synchronized_bn: Use `BatchNormalization(synchronized=True)`, which
            computes batch statistics over all replicas under `tf.distribute`.
            Defaults to False.
        rescale: Map inputs from [0, 255] to [0, 1] inside the model, so the
            encoder takes raw images. Defaults to True.
        name: Model name. Defaults to `"resnet{depth}"`.
        norm: `"batch"` (BatchNorm) or `"layer"` (layer norm over each
            sample's feature map, `GroupNormalization(groups=1)`: no
            statistics shared between the samples of a batch, CPC v2's
            choice for its patch encoder). The layers keep their `*_bn`
            names. Defaults to `"batch"`.

    Returns:
        A functional `keras.Model` from images to `[batch, features]`, where
        features is `512 * width` (ResNet-18/34) or `2048 * width` (ResNet-50).
    """
    if depth not in _BLOCKS:
        raise ValueError(f"`depth` must be one of {sorted(_BLOCKS)}. Received: depth={depth!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"`width` must be a number > 0. Received: width={width!r}")
    try:
        height, wide, channels = (None if v is None else int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError("`input_shape` must be (height, width, channels). "
                         f"Received: input_shape={input_shape!r}") from None
    if channels is None or channels < 1 or any(
            v is not None and v < 8 for v in (height, wide)):
        raise ValueError("`input_shape` must be at least (8, 8, 1). "
                         f"Received: input_shape={input_shape!r}")
    if norm not in ("batch", "layer"):
        raise ValueError(f"`norm` must be 'batch' or 'layer'. Received: norm={norm!r}")
    if norm == "layer":
        synchronized_bn = "layer"
    kind, counts = _BLOCKS[depth]
    block = _basic_block if kind == "basic" else _bottleneck_block
    base = max(1, int(round(64 * width)))
    inputs = keras.Input(shape=(height, wide, channels), name="images")
    x = inputs
    if rescale:
        x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(x)
    x = _conv(base, 3, 1, "stem_conv")(x)
    x = keras.layers.ReLU(name="stem_relu")(_bn("stem_bn", synchronized_bn)(x))
    for stage, count in enumerate(counts):
        filters = base * 2 ** stage
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            x = block(x, filters, stride, f"stage{stage + 1}_block{index + 1}",
                      synchronized_bn)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name=name or f"resnet{depth}")


def resnet18(input_shape=(32, 32, 3), width=1.0, **kwargs):
    """CIFAR-stem ResNet-18; see `resnet` for the arguments."""
    return resnet(18, input_shape, width, **kwargs)


def resnet34(input_shape=(32, 32, 3), width=1.0, **kwargs):
    """CIFAR-stem ResNet-34; see `resnet` for the arguments."""
    return resnet(34, input_shape, width, **kwargs)


def resnet50(input_shape=(32, 32, 3), width=1.0, **kwargs):
    """CIFAR-stem ResNet-50 (bottleneck blocks); see `resnet` for the arguments."""
    return resnet(50, input_shape, width, **kwargs)


def get(name, input_shape, width=1.0, **kwargs):
    """An encoder by name: `"resnet18"`, `"resnet34"` or `"resnet50"`."""
    builders = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}
    if name not in builders:
        raise ValueError(f"Unknown encoder. Expected one of {sorted(builders)}. "
                         f"Received: name={name!r}")
    return builders[name](input_shape, width, **kwargs)


def as_encoder(model):
    """Checks that `model` maps images to pooled features `[batch, features]`.

    Args:
        model: A built Keras model (any backbone with pooling).

    Returns:
        The same model.

    Raises:
        TypeError: not a Keras model.
        ValueError: its output is not rank 2 `[batch, features]`.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"An encoder must be a keras.Model. Received: {model!r}")
    try:
        shape = tuple(model.output.shape)
    except (AttributeError, ValueError):
        return model  # subclassed model: checked on the first call instead
    if len(shape) != 2:
        raise ValueError(
            "An encoder must output pooled features [batch, features] (for Keras "
            "applications pass pooling='avg'). "
            f"Received: output shape {shape}")
    return model


@tf.custom_gradient
def _same_conv_stride_1(inputs, kernel):
    """`conv2d(inputs, kernel, 1, "SAME")` (NHWC, odd kernel) whose input gradient
    is the forward convolution of the output gradient with the kernel flipped in
    space and transposed in channels: the same values as TensorFlow's
    `Conv2DBackpropInput`, which is the slow kernel on CPUs at few channels."""

    def grad(upstream):
        flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
        d_inputs = tf.nn.conv2d(upstream, flipped, 1, "SAME")
        d_kernel = tf.compat.v1.nn.conv2d_backprop_filter(
            inputs, tf.shape(kernel), upstream, [1, 1, 1, 1], "SAME")
        return d_inputs, d_kernel

    return tf.nn.conv2d(inputs, kernel, 1, "SAME"), grad


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (same arguments, weights and values) whose input
    gradient is computed as a forward convolution where that is exact.

    For stride 1, no dilation, `padding="same"`, one group, channels-last data
    and odd kernel sizes, the gradient with respect to the input of a
    convolution is a convolution of the output gradient with the kernel
    flipped in space and its two channel axes swapped. TensorFlow computes it
    with `Conv2DBackpropInput`, which on CPUs is much slower than its forward
    convolution for the narrow layers of small encoders (docs/BENCHMARKS.md,
    "The training step again", measures what it saves: 1.11x per SupCon step
    of `resnet18(width=0.125)` on an AVX2 CPU). Every other configuration uses Keras's own convolution.
    `supcon_tf.encoders` builds its ResNets from it; a saved encoder then needs
    `import supcon_tf` before `keras.models.load_model`, as every supcon_tf
    model does (the zoo's SavedModels need nothing).
    """

    def _forward_input_gradient(self):
        return (self.rank == 2 and tuple(self.strides) == (1, 1)
                and tuple(self.dilation_rate) == (1, 1) and self.padding == "same"
                and self.groups == 1 and self.data_format == "channels_last"
                and all(k % 2 == 1 for k in self.kernel_size))

    def convolution_op(self, inputs, kernel):
        if not self._forward_input_gradient():
            return super().convolution_op(inputs, kernel)
        inputs = tf.convert_to_tensor(inputs)
        return _same_conv_stride_1(inputs, tf.cast(tf.convert_to_tensor(kernel), inputs.dtype))
