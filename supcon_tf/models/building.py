"""Building a model of the family in one place: after its outermost
constructor, when its encoder declares its input shape."""

import functools

from supcon_tf._checks import check_views


def feature_shape(encoder, input_shape):
    """The encoder's output shape `(None, features)` for images of `input_shape`."""
    if not encoder.built:
        encoder.build(tuple(input_shape))
    return (None, encoder.compute_output_shape(tuple(input_shape))[-1])


def build_if_known(model, network=None):
    """Builds `model` at construction when `network` (default: its encoder)
    declares its input shape (functional models do; the image size may be
    None, the channels must be known), so `fit` callbacks such as
    BackupAndRestore that need a built model work from the first call, and a
    `.keras` file keeps the optimizer's state."""
    try:
        shape = (model.encoder if network is None else network).input_shape
    except (AttributeError, ValueError):
        return
    if isinstance(shape, tuple) and len(shape) > 1 and shape[-1] is not None:
        model.build(shape)


def refuse_mixing(name, options, why):
    """A `ValueError` when the constructor's `options` ask for i-Mix or
    adversarial views, which `name`'s views cannot take (`why`)."""
    if options.get("imix") is not None or options.get("adversarial_eps", 0.0):
        raise ValueError(f"{name} supports neither i-Mix nor adversarial views ({why}). "
                         f"Received: imix={options.get('imix')!r}, "
                         f"adversarial_eps={options.get('adversarial_eps', 0.0)!r}")


def check_two_views(name, views):
    """A `ValueError` unless `views` is 2 (methods built on pairs of views)."""
    check_views(name, views, 2)


def build_when_constructed(init):
    """`init` of a `ContrastiveModel` subclass, followed by `build_if_known`
    once the outermost constructor has finished (subclasses set their own
    attributes after `super().__init__`, so the build waits for all of them)."""

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        # Written to __dict__ directly: Keras's attribute tracking starts only
        # in keras.Model's constructor.
        depth = self.__dict__.get("_constructors_running", 0)
        self.__dict__["_constructors_running"] = depth + 1
        try:
            init(self, *args, **kwargs)
        finally:
            self.__dict__["_constructors_running"] = depth
        if depth == 0:
            build_if_known(self)

    return __init__
