"""Encoders of several views of an image: a fixed signal per view (CMC) or
views a flow learns (InfoMin), each view through its own backbone."""

import keras
import tensorflow as tf

from supcon_tf.encoders.backbones import as_encoder

_PACKAGE = "supcon_tf"

SIGNALS = ("image", "gradient", "laplacian")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ViewSignal(keras.layers.Layer):
    """A fixed signal derived from images `[batch, H, W, C]` in the library's
    0-255 pixel range, in the same range and shape: the views of Contrastive
    Multiview Coding (`supcon_tf.models.CMCModel`) for images without colour
    channels to split.

    - `"image"`: the image itself (intensity).
    - `"gradient"`: the Sobel gradient magnitude of each channel,
      `sqrt(dx^2 + dy^2) / (4 sqrt 2)` (edges: where intensity changes,
      not what it is).
    - `"laplacian"`: `|Laplacian| / 4` of each channel (the 4-neighbour
      kernel; second-order structure: lines and corners).

    Each is at most 255 for inputs in [0, 255]. Reflect-padded, so borders
    give no false edges.

    Args:
        kind: One of `SIGNALS`.
    """

    def __init__(self, kind="image", **kwargs):
        super().__init__(**kwargs)
        if kind not in SIGNALS:
            raise ValueError(f"`kind` must be one of {SIGNALS}. Received: kind={kind!r}")
        self.kind = kind

    def call(self, images):
        x = tf.cast(images, self.compute_dtype)
        if self.kind == "image":
            return x
        if self.kind == "gradient":
            edges = tf.image.sobel_edges(tf.cast(x, tf.float32))       # [B, H, W, C, 2]
            magnitude = tf.sqrt(tf.reduce_sum(tf.square(edges), -1) + 1e-12)
            return tf.cast(magnitude / (4.0 * 2.0 ** 0.5), self.compute_dtype)
        channels = x.shape[-1]
        kernel = tf.constant([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
        padded = tf.pad(tf.cast(x, tf.float32), [[0, 0], [1, 1], [1, 1], [0, 0]], "REFLECT")
        lap = tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")
        return tf.cast(tf.abs(lap) / 4.0, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


def multi_view(backbone, signals=("image", "gradient"), name="multi_view_encoder"):
    """An encoder of one backbone per signal (CMC's "one network per view"):
    `images -> concat_m backbone_m(ViewSignal(signals[m])(images))`.

    Each backbone is a fresh copy of `backbone`'s architecture
    (`keras.models.clone_model`, new weights), so the features are
    `[batch, len(signals) * F]`, the signals' features side by side in
    `signals` order.

    Args:
        backbone: An encoder (`as_encoder`) with a known input shape.
        signals: Names from `SIGNALS`, at least 2, all different.
        name: The model's name.
    """
    backbone = as_encoder(backbone)
    signals = tuple(signals)
    if len(signals) < 2 or len(set(signals)) != len(signals):
        raise ValueError("`signals` must name at least 2 different signals. "
                         f"Received: signals={signals!r}")
    for kind in signals:
        if kind not in SIGNALS:
            raise ValueError(f"`signals` must be names from {SIGNALS}. Received: {kind!r}")
    shape = tuple(backbone.input_shape[1:])
    images = keras.Input(shape, name="images")
    features = []
    for kind in signals:
        copy = keras.models.clone_model(backbone)
        copy.name = f"{kind}_{backbone.name}"
        features.append(copy(ViewSignal(kind, name=f"{kind}_signal")(images)))
    return keras.Model(images, keras.layers.Concatenate(name="features")(features), name=name)


def view_signals(encoder):
    """The signals of a `multi_view` encoder, in feature order (empty for
    any other encoder)."""
    return tuple(layer.kind for layer in getattr(encoder, "layers", ())
                 if isinstance(layer, ViewSignal))


def signal_branches(encoder):
    """`[(ViewSignal layer, backbone), ...]` of a `multi_view` encoder, in
    feature order: each signal's own path, to run on its own input."""
    signals = [layer for layer in encoder.layers if isinstance(layer, ViewSignal)]
    backbones = [layer for layer in encoder.layers if isinstance(layer, keras.Model)]
    pairs = list(zip(signals, backbones))
    if len(signals) != len(backbones) or any(
            not backbone.name.startswith(f"{signal.kind}_") for signal, backbone in pairs):
        raise ValueError(f"{encoder.name} is not an encoder of `multi_view`.")
    return pairs


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ViewFlow(keras.layers.Layer):
    """A learnable view generator: InfoMin's flow (Tian et al., NeurIPS 2020,
    section 4) from an image to as many view channels as it has `signals`.

    The image's signals (`ViewSignal`s, each scaled to [0, 1]) are the
    channels of a pixel; `steps` additive coupling layers then mix them, step
    k adding to channel `k mod M` a small per-pixel MLP (`hidden` units,
    tanh) of the other channels. Each step is invertible with Jacobian
    determinant 1 (volume-preserving, the paper's VP flow), so the views
    together keep everything the signals hold: a generator trained to make
    the views share less cannot do it by discarding the image. The last
    layer of each MLP starts at zero, so an untrained flow gives the signals
    themselves. Output: `[batch, H, W, M]` in the library's 0-255 scale
    (`inverse` maps it back).

    On a one-channel image the paper's colour space has nothing to split;
    the signals (default: the image and its gradient magnitude, CMC's)
    stand in for its colour channels.

    Args:
        signals: Names from `SIGNALS`, at least 2, all different. Defaults
            to `("image", "gradient")`.
        steps: Coupling layers, >= 1. Defaults to 4.
        hidden: Hidden units of each coupling MLP, >= 1. Defaults to 16.
    """

    def __init__(self, signals=("image", "gradient"), steps=4, hidden=16, **kwargs):
        super().__init__(**kwargs)
        signals = tuple(signals)
        if len(signals) < 2 or len(set(signals)) != len(signals) or any(
                kind not in SIGNALS for kind in signals):
            raise ValueError(f"`signals` must name at least 2 different signals of "
                             f"{SIGNALS}. Received: signals={signals!r}")
        for name, value in (("steps", steps), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
        self.signals, self.steps, self.hidden = signals, steps, hidden
        self.signal_layers = [ViewSignal(kind, name=f"{kind}_signal") for kind in signals]
        self.couplings = [
            (keras.layers.Dense(hidden, activation="tanh", name=f"coupling_{k}_hidden"),
             keras.layers.Dense(1, kernel_initializer="zeros", name=f"coupling_{k}_out"))
            for k in range(steps)]

    def build(self, input_shape):
        others = (len(self.signals) - 1,)
        for first, last in self.couplings:
            first.build(others)
            last.build((self.hidden,))
        self.built = True

    def _shift(self, k, x):
        """Step k's target channel and the value its coupling adds to it."""
        m = len(self.signals)
        target = k % m
        others = tf.concat([x[..., j:j + 1] for j in range(m) if j != target], axis=-1)
        first, last = self.couplings[k]
        return target, last(first(others))

    def _set(self, x, target, value):
        channels = tf.unstack(x, axis=-1)
        channels[target] = value[..., 0]
        return tf.stack(channels, axis=-1)

    def call(self, images):
        x = tf.concat([tf.cast(layer(images), tf.float32) for layer in self.signal_layers],
                      axis=-1) / 255.0
        for k in range(self.steps):
            target, shift = self._shift(k, x)
            x = self._set(x, target, x[..., target:target + 1] + shift)
        return tf.cast(255.0 * x, self.compute_dtype)

    def inverse(self, views):
        """The signals `[batch, H, W, M]` (0-255) of the views `call` made."""
        x = tf.cast(views, tf.float32) / 255.0
        for k in reversed(range(self.steps)):
            target, shift = self._shift(k, x)
            x = self._set(x, target, x[..., target:target + 1] - shift)
        return 255.0 * x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.signals),)

    def get_config(self):
        return {**super().get_config(), "signals": list(self.signals), "steps": self.steps,
                "hidden": self.hidden}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ViewChannel(keras.layers.Layer):
    """Channel `index` of `[batch, H, W, M]`, kept as `[batch, H, W, 1]`."""

    def __init__(self, index, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, x):
        return x[..., self.index:self.index + 1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self):
        return {**super().get_config(), "index": self.index}


def learned_views(backbone, flow, name="learned_views_encoder"):
    """An encoder of InfoMin's learned views: `images -> flow -> channel m ->
    backbone_m`, the views' features side by side (`[batch, M * F]`). Each
    backbone is a fresh copy of `backbone` (one input channel).

    Args:
        backbone: An encoder (`as_encoder`) of one-channel images.
        flow: A `ViewFlow`.
        name: The model's name.
    """
    backbone = as_encoder(backbone)
    if not isinstance(flow, ViewFlow):
        raise TypeError(f"`flow` must be a ViewFlow. Received: {flow!r}")
    shape = tuple(backbone.input_shape[1:])
    if shape[-1] != 1:
        raise ValueError("Each learned view is one channel: `backbone` must take images "
                         f"[batch, H, W, 1]. Received: input shape {shape}")
    images = keras.Input(shape, name="images")
    views = flow(images)
    features = []
    for m in range(len(flow.signals)):
        copy = keras.models.clone_model(backbone)
        copy.name = f"view{m}_{backbone.name}"
        features.append(copy(ViewChannel(m, name=f"view{m}_channel")(views)))
    return keras.Model(images, keras.layers.Concatenate(name="features")(features), name=name)


def learned_branches(encoder):
    """`(flow, [(ViewChannel, backbone), ...])` of a `learned_views` encoder,
    or None for any other encoder."""
    flows = [layer for layer in getattr(encoder, "layers", ()) if isinstance(layer, ViewFlow)]
    if not flows:
        return None
    channels = [layer for layer in encoder.layers if isinstance(layer, ViewChannel)]
    backbones = [layer for layer in encoder.layers if isinstance(layer, keras.Model)]
    if len(flows) != 1 or len(channels) != len(backbones):
        raise ValueError(f"{encoder.name} is not an encoder of `learned_views`.")
    return flows[0], list(zip(channels, backbones))
