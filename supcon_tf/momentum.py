"""Momentum (EMA) target networks: the copy, its update and the momentum schedule.

theta_target <- m * theta_target + (1 - m) * theta_online, with `m` constant
(MoCo) or rising from `m` to 1 along a cosine over training (BYOL).
"""

import math
import numbers

import keras
import tensorflow as tf

from supcon_tf import _cross_replica

SCHEDULES = ("constant", "cosine")


def check_momentum(momentum, schedule="constant"):
    """Validates a momentum in [0, 1] and a schedule name; returns the float."""
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"`momentum` must be a number in [0, 1]. Received: momentum={momentum!r}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"`momentum` must be in [0, 1]. Received: momentum={momentum}")
    if schedule not in SCHEDULES:
        raise ValueError(f"`momentum_schedule` must be one of {SCHEDULES}. "
                         f"Received: momentum_schedule={schedule!r}")
    return float(momentum)


def momentum_at(step, total_steps, base, schedule="constant"):
    """The momentum at `step` of `total_steps`: `base` (constant), or BYOL's
    `1 - (1 - base) * (cos(pi * step / total) + 1) / 2` (cosine)."""
    if schedule == "constant":
        return tf.constant(base, tf.float32)
    progress = tf.cast(step, tf.float32) / tf.cast(tf.maximum(total_steps, 1), tf.float32)
    progress = tf.minimum(progress, 1.0)
    return 1.0 - (1.0 - base) * (tf.cos(math.pi * progress) + 1.0) / 2.0


def copy_network(layer):
    """A new copy of the Keras `layer` (a functional, sequential or
    serialisable subclassed model, or any serialisable layer), built like it
    when it is built, holding the same weights: a target network's start."""
    if isinstance(layer, keras.Model):
        copy = keras.models.clone_model(layer)
    else:
        copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    if layer.built and copy.built:
        copy.set_weights(layer.get_weights())
    return copy


def weight_pairs(target, online):
    """`(target variable, online variable)` for each trainable weight of
    `online`, matched by position (the networks have the same structure)."""
    t, o = target.weights, online.weights
    if len(t) != len(o):
        raise ValueError(f"The target network has {len(t)} weights and the online "
                         f"one {len(o)}: they must have the same structure.")
    return [(tv, ov) for tv, ov in zip(t, o) if ov.trainable]


def freeze_as_target(network):
    """Marks the variables of `network` non-trainable, leaving its layers'
    `trainable` flags alone, so that BatchNorm still normalises with the batch
    statistics when called with `training=True` (as the momentum encoders of
    MoCo and BYOL do) while no optimizer ever updates it."""
    for variable in network.weights:
        variable.trainable = False


def ema_update(pairs, momentum):
    """`t <- m t + (1 - m) o` for each `(t, o)` of `pairs` (see `weight_pairs`);
    replica-safe (every replica holds the same synchronised weights)."""
    momentum = tf.cast(momentum, tf.float32)
    updates = []
    for t, o in pairs:
        m = tf.cast(momentum, t.dtype)
        updates.append((t, m * tf.convert_to_tensor(t) + (1 - m) * tf.convert_to_tensor(o)))
    _cross_replica.assign(updates)
