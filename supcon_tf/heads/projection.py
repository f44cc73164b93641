"""The projection head of SimCLR / SupCon, the projectors and predictors of
the methods without negatives (with the papers' shapes), L2 normalisation
and CLIP's learned logit scale."""

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
