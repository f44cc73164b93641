"""Heads on the encoder's features: the projection head of SimCLR / SupCon,
the projectors and predictors of the methods without negatives (with the
papers' shapes), and L2 normalisation."""

import math

import keras

_PACKAGE = "supcon_tf"
HEAD_KINDS = ("mlp", "linear", "none")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class L2Normalize(keras.layers.Layer):
    """L2-normalises its input along `axis`.

    Args:
        axis: The axis to normalise. Defaults to -1.
        epsilon: Added to the squared norm for stability. Defaults to 1e-12.
    """

    def __init__(self, axis=-1, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.epsilon = epsilon

    def call(self, inputs):
        return keras.ops.normalize(inputs, axis=self.axis, epsilon=self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClipValue(keras.constraints.Constraint):
    """Keeps a weight in `[minimum, maximum]` after each optimizer step."""

    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = float(minimum), float(maximum)

    def __call__(self, w):
        return keras.ops.clip(w, self.minimum, self.maximum)

    def get_config(self):
        return {"minimum": self.minimum, "maximum": self.maximum}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LogitScale(keras.layers.Layer):
    """CLIP's learned inverse temperature: `exp(s)` of one trained weight `s`,
    initialised at `log(initial)` and kept in `[0, log(maximum)]` after each
    step (open_clip: init `1 / 0.07`, clamped at 100). Its call ignores its
    input and returns the scalar, for `supcon_tf.losses.CLIPLoss`'s
    `logit_scale=`.

    Args:
        initial: The scale at initialisation, >= 1. Defaults to 1 / 0.07.
        maximum: The largest scale, >= `initial`. Defaults to 100.

    Example:

    >>> float(LogitScale()(None))
    14.285...
    """

    def __init__(self, initial=1 / 0.07, maximum=100.0, **kwargs):
        super().__init__(**kwargs)
        if not 1.0 <= float(initial) <= float(maximum):
            raise ValueError("`initial` and `maximum` must satisfy 1 <= initial <= maximum. "
                             f"Received: initial={initial!r}, maximum={maximum!r}")
        self.initial, self.maximum = float(initial), float(maximum)
        self.log_scale = self.add_weight(
            name="log_scale", shape=(), initializer=keras.initializers.Constant(
                math.log(self.initial)), constraint=ClipValue(0.0, math.log(self.maximum)))

    def call(self, inputs=None):
        return keras.ops.exp(self.log_scale)

    def compute_output_shape(self, input_shape=None):
        return ()

    def get_config(self):
        return {**super().get_config(), "initial": self.initial, "maximum": self.maximum}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ProjectionHead(keras.layers.Layer):
    """The projection head g(.) of SimCLR / SupCon, with L2-normalised output.

    `"mlp"`: Dense -> (BatchNorm) -> ReLU for each hidden layer, then a linear
    Dense to `output_dim`; `"linear"`: a single Dense; `"none"`: only the
    normalisation. Accepts `[batch, features]` or `[batch, views, features]`.
    With `normalize=False` it is a plain MLP: the projectors and predictors of
    BYOL, SimSiam, Barlow Twins and VICReg (`byol_projector` and the other
    functions below build them with the papers' shapes).

    Args:
        output_dim: Size of the projection. Defaults to 128.
        hidden_dims: Sizes of the hidden layers of the `"mlp"` head, or None for
            one hidden layer as wide as the input (the paper's head).
            Defaults to None.
        batch_norm: BatchNorm after each hidden Dense (SimCLR v2 style).
            Defaults to True.
        kind: `"mlp"`, `"linear"` or `"none"`. Defaults to `"mlp"`.
        synchronized_bn: BatchNorm statistics over the global batch under a
            `tf.distribute` strategy (`BatchNormalization(synchronized=True)`).
            Defaults to False.
        normalize: L2-normalise the output. Defaults to True.
        output_batch_norm: BatchNorm without scale and offset after the last
            Dense (SimSiam's projector). Defaults to False.
        output_bias: A bias in the last Dense (off in Barlow Twins' and
            VICReg's, and when `output_batch_norm`). Defaults to True.

    Example:

    >>> head = ProjectionHead(128, hidden_dims=(256,))
    >>> head(keras.ops.ones((4, 2, 64))).shape
    TensorShape([4, 2, 128])

    Reference:
        Chen et al., SimCLR, ICML 2020; Khosla et al., SupCon, NeurIPS 2020.
    """

    def __init__(self, output_dim=128, hidden_dims=None, batch_norm=True,
                 kind="mlp", synchronized_bn=False, normalize=True,
                 output_batch_norm=False, output_bias=True, **kwargs):
        super().__init__(**kwargs)
        if kind not in HEAD_KINDS:
            raise ValueError(f"`kind` must be one of {HEAD_KINDS}. Received: kind={kind!r}")
        if kind != "none" and (isinstance(output_dim, bool)
                               or not isinstance(output_dim, int) or output_dim < 1):
            raise ValueError(
                f"`output_dim` must be a positive integer. Received: output_dim={output_dim!r}")
        if hidden_dims is not None:
            hidden_dims = tuple(hidden_dims)
            if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in hidden_dims):
                raise ValueError("`hidden_dims` must be positive integers. "
                                 f"Received: hidden_dims={hidden_dims!r}")
        self.output_dim = output_dim
        self.hidden_dims = hidden_dims
        self.batch_norm = bool(batch_norm)
        self.kind = kind
        self.synchronized_bn = bool(synchronized_bn)
        self.l2_normalize = bool(normalize)
        self.output_batch_norm = bool(output_batch_norm)
        self.output_bias = bool(output_bias)
        self.normalize = L2Normalize(name="l2")
        self.blocks = []
        self.out = None
        self.out_norm = None

    def build(self, input_shape):
        in_dim = input_shape[-1]
        if self.kind == "mlp":
            hidden = self.hidden_dims if self.hidden_dims is not None else (in_dim,)
            shape = (None, in_dim)
            for i, dim in enumerate(hidden):
                dense = keras.layers.Dense(dim, use_bias=not self.batch_norm,
                                           name=f"hidden{i}")
                dense.build((None, shape[-1]))
                shape = (None, dim)
                norm = None
                if self.batch_norm:
                    norm = keras.layers.BatchNormalization(
                        synchronized=self.synchronized_bn, name=f"hidden{i}_bn")
                    norm.build(shape)
                self.blocks.append((dense, norm))
            self.out = self._output_layer(shape)
        elif self.kind == "linear":
            self.out = self._output_layer((None, in_dim))

    def _output_layer(self, shape):
        out = keras.layers.Dense(self.output_dim, name="projection",
                                 use_bias=self.output_bias and not self.output_batch_norm)
        out.build(shape)
        if self.output_batch_norm:
            self.out_norm = keras.layers.BatchNormalization(
                center=False, scale=False, synchronized=self.synchronized_bn,
                name="projection_bn")
            self.out_norm.build((None, self.output_dim))
        return out

    def call(self, inputs, training=False):
        # [batch, views, features] -> [batch * views, features]: BatchNorm
        # statistics cover all views, as when the views are concatenated.
        leading = keras.ops.shape(inputs)[:-1]
        x = keras.ops.reshape(inputs, (-1, keras.ops.shape(inputs)[-1]))
        for dense, norm in self.blocks:
            x = dense(x)
            if norm is not None:
                x = norm(x, training=training)
            x = keras.ops.relu(x)
        if self.out is not None:
            x = self.out(x)
        if self.out_norm is not None:
            x = self.out_norm(x, training=training)
        if self.l2_normalize:
            x = self.normalize(x)
        return keras.ops.reshape(x, tuple(leading) + (keras.ops.shape(x)[-1],))

    def compute_output_shape(self, input_shape):
        if self.kind == "none":
            return input_shape
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update({"output_dim": self.output_dim,
                       "hidden_dims": (list(self.hidden_dims) if self.hidden_dims is not None
                                       else None),
                       "batch_norm": self.batch_norm, "kind": self.kind,
                       "synchronized_bn": self.synchronized_bn,
                       "normalize": self.l2_normalize,
                       "output_batch_norm": self.output_batch_norm,
                       "output_bias": self.output_bias})
        return config


def _mlp(name, output_dim, hidden_dims, synchronized_bn, **kwargs):
    return ProjectionHead(output_dim, hidden_dims=hidden_dims, normalize=False,
                          synchronized_bn=synchronized_bn, name=name, **kwargs)


def byol_projector(output_dim=256, hidden_dim=4096, synchronized_bn=False):
    """BYOL's projector: Dense(hidden) -> BatchNorm -> ReLU -> Dense(output),
    not normalised (Grill et al., 2020: 4096 -> 256 after a ResNet-50)."""
    return _mlp("projector", output_dim, (hidden_dim,), synchronized_bn)


def byol_predictor(output_dim=256, hidden_dim=4096, synchronized_bn=False):
    """BYOL's predictor: the projector's shape, on the projection; not normalised."""
    return _mlp("predictor", output_dim, (hidden_dim,), synchronized_bn)


def simsiam_projector(output_dim=2048, hidden_dim=2048, synchronized_bn=False):
    """SimSiam's projector: two Dense -> BatchNorm -> ReLU blocks, then Dense ->
    BatchNorm without scale or offset (Chen & He, 2021: 2048 wide)."""
    return _mlp("projector", output_dim, (hidden_dim, hidden_dim), synchronized_bn,
                output_batch_norm=True)


def simsiam_predictor(output_dim=2048, hidden_dim=512, synchronized_bn=False):
    """SimSiam's predictor, a bottleneck: Dense(hidden) -> BatchNorm -> ReLU ->
    Dense(output); not normalised (2048 -> 512 -> 2048 in the paper)."""
    return _mlp("predictor", output_dim, (hidden_dim,), synchronized_bn)


def barlow_twins_projector(output_dim=8192, hidden_dim=8192, synchronized_bn=False):
    """Barlow Twins' projector: two Dense -> BatchNorm -> ReLU blocks, then a
    Dense without bias (Zbontar et al., 2021: 8192-8192-8192)."""
    return _mlp("projector", output_dim, (hidden_dim, hidden_dim), synchronized_bn,
                output_bias=False)


def vicreg_expander(output_dim=8192, hidden_dim=8192, synchronized_bn=False):
    """VICReg's expander: two Dense -> BatchNorm -> ReLU blocks, then a Dense
    without bias (Bardes et al., 2022: 8192-8192-8192)."""
    return _mlp("expander", output_dim, (hidden_dim, hidden_dim), synchronized_bn,
                output_bias=False)


def swav_projector(output_dim=128, hidden_dim=2048, synchronized_bn=False):
    """SwAV's projection head: Dense(hidden) -> BatchNorm -> ReLU ->
    Dense(output), L2-normalised (Caron et al., 2020: 2048 -> 128 after a
    ResNet-50)."""
    return ProjectionHead(output_dim, hidden_dims=(hidden_dim,),
                          synchronized_bn=synchronized_bn, name="projector")


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
