"""Which Keras backend runs, and the guard of the TensorFlow-only parts.

The losses (`supcon_tf.losses`) run on every Keras 3 backend: on TensorFlow
their own TensorFlow code (fused and blockwise paths, the global batch under
`tf.distribute`), elsewhere the same maths in `keras.ops`. The rest of the
package (the models' train steps, augmentation layers, memory layers,
`tf.distribute`, `tf.data` pipelines, SavedModel export) is TensorFlow code:
built on another backend, it raises `require_tensorflow`'s error instead of
failing later inside a traced function.
"""

import keras
import tensorflow as tf


def backend():
    """The name of Keras's backend: "tensorflow", "jax", "torch" or "numpy"."""
    return keras.backend.backend()


def on_tensorflow(*tensors):
    """True when the TensorFlow code of a loss applies: Keras's backend is
    TensorFlow, or a tensor given is a TensorFlow one (a user on another
    backend who calls a loss on `tf.Tensor`s gets TensorFlow's result)."""
    if backend() == "tensorflow":
        return True
    return any(isinstance(t, (tf.Tensor, tf.Variable)) for t in tf.nest.flatten(tensors))


def require_tensorflow(what):
    """Raises a `RuntimeError` naming `what` and the backend unless Keras
    runs on TensorFlow."""
    name = backend()
    if name != "tensorflow":
        raise RuntimeError(
            f"{what} needs Keras's TensorFlow backend (its training step, tf.distribute, "
            f"tf.data or SavedModel export are TensorFlow code); Keras runs on {name!r}. "
            "Set KERAS_BACKEND=tensorflow before importing keras to use it. The losses in "
            "supcon_tf.losses (e.g. model.compile(loss=supcon_tf.losses.SupConLoss())) "
            f"work on {name!r} as on every Keras 3 backend.")
