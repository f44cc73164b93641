"""SimCLR v2's distillation loss: the student's cross-entropy against the
teacher's temperature-softened predictions."""

import keras
import tensorflow as tf

from supcon_tf import _backend
from supcon_tf.losses._checks import _positive_number
from supcon_tf.losses._portable import others as _portable


def distillation_loss(y_true, y_pred, temperature=1.0):
    """Per-example `-sum_c softmax(t / T)_c log softmax(s / T)_c` of teacher
    logits `y_true` and student logits `y_pred`, both `[batch, classes]`."""
    if not _backend.on_tensorflow(y_true, y_pred):
        return _portable.distillation_loss(y_true, y_pred, temperature)
    teacher = tf.stop_gradient(tf.cast(y_true, tf.float32))
    student = tf.cast(y_pred, tf.float32)
    if teacher.shape.rank != 2 or student.shape.rank != 2:
        raise ValueError("Distillation needs logits [batch, classes] from both models. "
                         f"Received: teacher {teacher.shape}, student {student.shape}")
    return -tf.reduce_sum(tf.nn.softmax(teacher / temperature)
                          * tf.nn.log_softmax(student / temperature), axis=-1)


@keras.saving.register_keras_serializable(package="supcon_tf")
class DistillationLoss(keras.losses.Loss):
    """`distillation_loss` as a Keras loss: `loss(teacher_logits, student_logits)`.

    `supcon_tf.models.DistillationModel` uses it (with its labelled
    cross-entropy term); it also works compiled on any student model fed the
    teacher's logits as targets.

    Args:
        temperature: The softening temperature T > 0. Defaults to 1.0 (SimCLR v2's).
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"distillation_loss"`.
        dtype: Defaults to None (float32).

    Example:

    >>> import numpy as np
    >>> logits = np.array([[2.0, 0.0]], "float32")
    >>> round(float(DistillationLoss()(logits, logits)), 4)   # the teacher's entropy
    0.2395

    Reference:
        Chen et al., "Big Self-Supervised Models are Strong Semi-Supervised
        Learners", NeurIPS 2020.
    """

    def __init__(self, temperature=1.0, reduction="sum_over_batch_size",
                 name="distillation_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = _positive_number(temperature, "temperature")

    def call(self, y_true, y_pred):
        return distillation_loss(y_true, y_pred, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
