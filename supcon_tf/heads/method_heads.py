"""Heads of single methods: MiCE's gate and experts, CPC's masked context
and predictors, PixPro's pixel propagation."""

import keras

_PACKAGE = "supcon_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MixtureHead(keras.layers.Layer):
    """MiCE's heads: `num_experts` linear embeddings and a gating one, each
    L2-normalised, side by side in one output `[..., (num_experts + 1) *
    dim]` (experts first, the gate last; `split` takes them apart). As the
    official ResNet's `linear_K` and `classifier` layers: one linear map of
    the encoder's features per head.

    Args:
        num_experts: K, >= 2.
        dim: Each embedding's size, >= 1. Defaults to 128.
        use_bias: Defaults to True.

    Example:

    >>> head = MixtureHead(3, 4)
    >>> out = head(keras.ops.ones((2, 16)))
    >>> tuple(out.shape), [tuple(t.shape) for t in head.split(out)]
    ((2, 16), [(2, 3, 4), (2, 4)])

    Reference:
        Tsai, Wu, Zhu, "MiCE: Mixture of Contrastive Experts for Unsupervised
        Image Clustering", ICLR 2021.
    """

    def __init__(self, num_experts, dim=128, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        for name, value, low in (("num_experts", num_experts, 2), ("dim", dim, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}. "
                                 f"Received: {name}={value!r}")
        self.num_experts, self.dim, self.use_bias = num_experts, dim, bool(use_bias)
        self.output_dim = (num_experts + 1) * dim
        self.dense = keras.layers.Dense(self.output_dim, use_bias=self.use_bias, name="heads")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.built = True

    def call(self, inputs, training=False):
        x = self.dense(inputs)
        shape = keras.ops.shape(x)
        x = keras.ops.reshape(x, (*shape[:-1], self.num_experts + 1, self.dim))
        x = x * keras.ops.rsqrt(keras.ops.maximum(
            keras.ops.sum(keras.ops.square(x), axis=-1, keepdims=True), 1e-12))
        return keras.ops.reshape(x, (*shape[:-1], self.output_dim))

    def split(self, outputs):
        """`(experts [..., K, dim], gate [..., dim])` of this head's output."""
        shape = keras.ops.shape(outputs)
        x = keras.ops.reshape(outputs, (*shape[:-1], self.num_experts + 1, self.dim))
        return x[..., :self.num_experts, :], x[..., self.num_experts, :]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts, "dim": self.dim,
                "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CPCContext(keras.layers.Layer):
    """CPC's context network and its predictors on a grid of patch
    encodings: `[batch, H, W, D]` -> predictions `[batch, steps, H, W, D]`.

    The context is a stack of `depth` convolutions masked along the rows (a
    PixelCNN-style autoregressive network: each `kernel_size x kernel_size`
    kernel sees its own row and the `kernel_size - 1` rows above, and columns
    on both sides), ReLU between them and residual connections; so
    `c_{i,j}` depends on rows up to `i` only. Step `k`'s prediction of the
    patch `k` rows below is a linear map of `c` (`W_k`, one `Dense` for all
    steps). Rows whose target falls outside the grid are computed too;
    `losses.cpc_loss` ignores them.

    Args:
        steps: K, the rows ahead predicted, >= 1. Defaults to 3.
        units: The context's channels, or None for the encodings' size.
            Defaults to None.
        depth: Masked convolutions, >= 1. Defaults to 2.
        kernel_size: Odd, >= 1. Defaults to 3.

    Example:

    >>> ctx = CPCContext(steps=2)
    >>> tuple(ctx(keras.ops.ones((2, 5, 5, 8))).shape)
    (2, 2, 5, 5, 8)

    Reference:
        Hénaff et al., "Data-Efficient Image Recognition with Contrastive
        Predictive Coding", ICML 2020.
    """

    def __init__(self, steps=3, units=None, depth=2, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("steps", steps), ("depth", depth), ("kernel_size", kernel_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd. Received: kernel_size={kernel_size}")
        if units is not None and (isinstance(units, bool) or not isinstance(units, int)
                                  or units < 1):
            raise ValueError(f"`units` must be None or an integer >= 1. Received: units={units!r}")
        self.steps, self.units, self.depth, self.kernel_size = steps, units, depth, kernel_size

    def build(self, input_shape):
        dim = input_shape[-1]
        units = self.units or dim
        self.convs = [keras.layers.Conv2D(units, self.kernel_size, padding="valid",
                                          name=f"masked_conv{i}") for i in range(self.depth)]
        channels = dim
        for conv in self.convs:
            conv.build((None, None, None, channels))
            channels = units
        self.predict = keras.layers.Dense(self.steps * dim, name="predictors")
        self.predict.build((None, None, None, units))
        self.dim = dim
        self.built = True

    def context(self, z):
        """`c [batch, H, W, units]`, each position from rows up to its own."""
        k = self.kernel_size
        pad = [[0, 0], [k - 1, 0], [(k - 1) // 2, (k - 1) // 2], [0, 0]]
        x = z
        for i, conv in enumerate(self.convs):
            y = conv(keras.ops.pad(x, pad))
            x = keras.ops.relu(y) + (x if x.shape[-1] == y.shape[-1] else 0.0)
        return x

    def call(self, inputs):
        c = self.context(inputs)
        p = self.predict(c)                                                 # [b, H, W, K*D]
        shape = keras.ops.shape(p)
        p = keras.ops.reshape(p, (shape[0], shape[1], shape[2], self.steps, self.dim))
        return keras.ops.transpose(p, (0, 3, 1, 2, 4))

    def get_config(self):
        return {**super().get_config(), "steps": self.steps, "units": self.units,
                "depth": self.depth, "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PixelPropagation(keras.layers.Layer):
    """PixPro's pixel propagation module: `[batch, L, D]` features of an
    image's L locations -> `[batch, L, D]`, each location the sum of every
    location's transformed feature weighted by their similarity,

        y_i = sum_j max(cos(x_i, x_j), 0) ** gamma * g(x_j) / ||g(x_j)||

    (the official `featprop`: the values `g(x)` L2-normalised, the weights
    not). `g` is the identity (`transform_layers=0`), one linear map (1, the
    paper's choice), or linear, BatchNorm, ReLU, linear (2).

    Args:
        gamma: The sharpness of the weights, > 0. Defaults to 2.0.
        transform_layers: 0, 1 or 2. Defaults to 1.
        synchronized_bn: BatchNorm over the global batch (with 2 layers).
            Defaults to False.

    Example:

    >>> ppm = PixelPropagation()
    >>> tuple(ppm(keras.ops.ones((2, 9, 8))).shape)
    (2, 9, 8)

    Reference:
        Xie et al., "Propagate Yourself: Exploring Pixel-Level Consistency
        for Unsupervised Visual Representation Learning", CVPR 2021.
    """

    def __init__(self, gamma=2.0, transform_layers=1, synchronized_bn=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
            raise ValueError(f"`gamma` must be a number > 0. Received: gamma={gamma!r}")
        if transform_layers not in (0, 1, 2) or isinstance(transform_layers, bool):
            raise ValueError("`transform_layers` must be 0, 1 or 2. "
                             f"Received: transform_layers={transform_layers!r}")
        self.gamma, self.transform_layers = float(gamma), transform_layers
        self.synchronized_bn = bool(synchronized_bn)

    def build(self, input_shape):
        dim = input_shape[-1]
        if self.transform_layers == 0:
            self.transform = []
        elif self.transform_layers == 1:
            self.transform = [keras.layers.Dense(dim, name="transform")]
        else:
            self.transform = [keras.layers.Dense(dim, name="transform0"),
                              keras.layers.BatchNormalization(
                                  synchronized=self.synchronized_bn, name="transform_bn"),
                              keras.layers.ReLU(name="transform_relu"),
                              keras.layers.Dense(dim, name="transform1")]
        shape = tuple(input_shape)
        for layer in self.transform:
            layer.build(shape)
        self.built = True

    def call(self, inputs, training=False):
        ops = keras.ops
        values = inputs
        for layer in self.transform:
            values = (layer(values, training=training)
                      if isinstance(layer, keras.layers.BatchNormalization) else layer(values))
        values = values / ops.maximum(ops.norm(values, axis=-1, keepdims=True), 1e-12)
        x = inputs / ops.maximum(ops.norm(inputs, axis=-1, keepdims=True), 1e-12)
        weights = ops.maximum(ops.matmul(x, ops.transpose(x, (0, 2, 1))), 0.0) ** self.gamma
        return ops.matmul(weights, values)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma,
                "transform_layers": self.transform_layers,
                "synchronized_bn": self.synchronized_bn}
