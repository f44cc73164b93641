"""Optimisers and learning-rate rules for large-batch contrastive training."""

import math

import keras
from keras import ops

_PACKAGE = "supcon_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al., 2017), as used by SimCLR.

    For each variable `w` with gradient `g` (weight decay added to the gradient
    first): `g <- g + weight_decay * w`; the learning rate is multiplied by the
    trust ratio `eta * ||w|| / ||g||` (1 when either norm is 0); then SGD with
    momentum (optionally Nesterov). Variables excluded from adaptation use the
    plain learning rate, and variables excluded from weight decay get none. By
    default both exclusions are every variable of rank <= 1 (biases and
    BatchNorm parameters), as SimCLR excludes `bias` and `batch_normalization`.

    Args:
        learning_rate: A float or a `keras.optimizers.schedules` schedule.
            Defaults to 0.1.
        momentum: Momentum in [0, 1). Defaults to 0.9.
        weight_decay: L2 weight decay added to the gradient. Defaults to 0.0.
        eta: Trust coefficient. Defaults to 0.001.
        nesterov: Nesterov momentum. Defaults to False.
        exclude_from_adaptation: Substrings of variable paths excluded from the
            trust ratio, in addition to rank <= 1 variables. Defaults to None.
        exclude_from_decay: Substrings of variable paths excluded from weight
            decay, in addition to rank <= 1 variables. Defaults to None.
        name: Optimizer name. Defaults to `"lars"`.
        **kwargs: Other `keras.optimizers.Optimizer` arguments (`clipnorm`, ...).

    Reference:
        You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks",
        2017; Chen et al., SimCLR, ICML 2020.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay=0.0, eta=0.001,
                 nesterov=False, exclude_from_adaptation=None, exclude_from_decay=None,
                 name="lars", **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum}")
        if weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay}")
        if eta <= 0:
            raise ValueError(f"`eta` must be > 0. Received: eta={eta}")
        self.momentum = float(momentum)
        self.lars_weight_decay = float(weight_decay)
        self.eta = float(eta)
        self.nesterov = bool(nesterov)
        self.exclude_from_adaptation = list(exclude_from_adaptation or [])
        self.exclude_from_decay = list(exclude_from_decay or [])

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in var_list]

    @staticmethod
    def _excluded(variable, patterns):
        if len(variable.shape) <= 1:
            return True
        path = getattr(variable, "path", variable.name)
        return any(p in path for p in patterns)

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        grad = ops.cast(gradient, variable.dtype)
        if self.lars_weight_decay and not self._excluded(variable, self.exclude_from_decay):
            grad = grad + self.lars_weight_decay * variable
        if not self._excluded(variable, self.exclude_from_adaptation):
            w_norm = ops.norm(ops.reshape(variable, [-1]))
            g_norm = ops.norm(ops.reshape(grad, [-1]))
            trust = ops.where(ops.logical_and(w_norm > 0, g_norm > 0),
                              self.eta * w_norm / ops.maximum(g_norm, 1e-30),
                              ops.ones_like(w_norm))
            lr = lr * trust
        velocity = self.momentums[self._get_variable_index(variable)]
        self.assign(velocity, self.momentum * velocity + lr * grad)
        if self.nesterov:
            self.assign_sub(variable, self.momentum * velocity + lr * grad)
        else:
            self.assign_sub(variable, velocity)

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum, "weight_decay": self.lars_weight_decay,
            "eta": self.eta, "nesterov": self.nesterov,
            "exclude_from_adaptation": self.exclude_from_adaptation,
            "exclude_from_decay": self.exclude_from_decay,
        })
        return config


def warmup_cosine(peak_learning_rate, total_steps, warmup_steps=0, alpha=0.0):
    """Linear warmup from 0 to `peak_learning_rate`, then cosine decay to
    `alpha * peak_learning_rate` at `total_steps`. Keras's own `CosineDecay`.

    Args:
        peak_learning_rate: The learning rate reached after warmup.
        total_steps: Steps of warmup plus decay, > `warmup_steps`.
        warmup_steps: Steps of linear warmup. Defaults to 0.
        alpha: Final learning rate as a fraction of the peak. Defaults to 0.0.

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.
    """
    if peak_learning_rate <= 0:
        raise ValueError("`peak_learning_rate` must be > 0. "
                         f"Received: peak_learning_rate={peak_learning_rate}")
    if warmup_steps < 0 or total_steps <= warmup_steps:
        raise ValueError("Need 0 <= warmup_steps < total_steps. Received: "
                         f"warmup_steps={warmup_steps}, total_steps={total_steps}")
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(
            peak_learning_rate, decay_steps=total_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total_steps - warmup_steps, alpha=alpha,
        warmup_target=peak_learning_rate, warmup_steps=warmup_steps)


def scale_learning_rate(base_learning_rate, batch_size, rule="linear", base_batch_size=256):
    """Scales a learning rate with the batch size.

    `"linear"` (Goyal et al., 2017): `base * batch_size / base_batch_size`;
    `"sqrt"` (SimCLR with LARS): `base * sqrt(batch_size / base_batch_size)`;
    `"none"`: `base`.

    Args:
        base_learning_rate: The learning rate at `base_batch_size`.
        batch_size: The global batch size.
        rule: `"linear"`, `"sqrt"` or `"none"`. Defaults to `"linear"`.
        base_batch_size: The batch size `base_learning_rate` is for. Defaults to 256.

    Returns:
        The scaled learning rate (float).
    """
    if rule not in ("linear", "sqrt", "none"):
        raise ValueError(f"`rule` must be 'linear', 'sqrt' or 'none'. Received: rule={rule!r}")
    if batch_size <= 0 or base_batch_size <= 0:
        raise ValueError("Batch sizes must be > 0. Received: "
                         f"batch_size={batch_size}, base_batch_size={base_batch_size}")
    ratio = batch_size / base_batch_size
    if rule == "linear":
        return base_learning_rate * ratio
    if rule == "sqrt":
        return base_learning_rate * math.sqrt(ratio)
    return float(base_learning_rate)


def with_learning_rate(optimizer, learning_rate, name=None):
    """A new, unbuilt optimizer of `optimizer`'s class and settings (momentum,
    weight decay, betas, clipping, ...) with another learning rate: for a
    part of a model trained at its own rate, such as SimSiam's predictor at
    a constant rate while the rest follows a schedule.

    Args:
        optimizer: A `keras.optimizers.Optimizer` (not a
            `LossScaleOptimizer`: its loss scale belongs to one optimizer).
        learning_rate: A float > 0 or a `keras.optimizers.schedules` schedule.
        name: The new optimizer's name. Defaults to None: `optimizer`'s name
            with `"_copy"` appended.

    Returns:
        A `keras.optimizers.Optimizer` with its own variables and iterations.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "`optimizer` is a LossScaleOptimizer (mixed_float16): its loss scale cannot be "
            "shared with a second optimizer. Use float32 or mixed_bfloat16. Received: "
            f"optimizer={optimizer!r}")
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError("`optimizer` must be a keras.optimizers.Optimizer. "
                        f"Received: optimizer={optimizer!r}")
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)):
            raise TypeError("`learning_rate` must be a number or a LearningRateSchedule. "
                            f"Received: learning_rate={learning_rate!r}")
        if not learning_rate > 0:
            raise ValueError(f"`learning_rate` must be > 0. Received: learning_rate={learning_rate}")
        learning_rate = float(learning_rate)
    config = optimizer.get_config()
    config["name"] = name or f"{config.get('name') or 'optimizer'}_copy"
    config["learning_rate"] = learning_rate
    return type(optimizer).from_config(config)
