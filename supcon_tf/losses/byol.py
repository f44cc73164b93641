"""BYOL's loss: the squared distance of L2-normalised vectors, 2 - 2 cos."""

import keras


@keras.saving.register_keras_serializable(package="supcon_tf")
class BYOLLoss(keras.losses.CosineSimilarity):
    """BYOL's regression loss, per sample `||p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z)`.

    Keras's `CosineSimilarity` (which gives `-cos`) shifted and scaled, so it
    keeps Keras's sample weights, reduction and distribution scaling. `y_true`
    is the target network's projection (pass it through `tf.stop_gradient`),
    `y_pred` the online prediction, both `[batch, dim]`.

    Args:
        axis: The axis of the vectors. Defaults to -1.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"byol_loss"`.
        dtype: Defaults to None (float32).

    Example:

    >>> import numpy as np
    >>> z = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    >>> round(float(BYOLLoss()(z, -z)), 4)      # opposite vectors: 2 - 2 * (-1)
    4.0

    Reference:
        Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, eq. (2).
    """

    def __init__(self, axis=-1, reduction="sum_over_batch_size", name="byol_loss",
                 dtype=None):
        super().__init__(axis=axis, reduction=reduction, name=name, dtype=dtype)
        self.axis = axis

    def call(self, y_true, y_pred):
        t, p = keras.ops.convert_to_tensor(y_true), keras.ops.convert_to_tensor(y_pred)
        if len(t.shape) != len(p.shape) or any(
                a is not None and b is not None and a != b for a, b in zip(t.shape, p.shape)):
            # Keras's cosine would broadcast [batch, 1] against [batch, dim].
            raise ValueError("BYOLLoss needs a target and a prediction of the same shape. "
                             f"Received: y_true.shape={t.shape}, y_pred.shape={p.shape}")
        return 2.0 + 2.0 * super().call(t, p)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
