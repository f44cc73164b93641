"""`ContrastiveLoss`: the family's one loss contract.

A loss of the family is called as

    loss(y_true, y_pred, sample_weight=None, **inputs)

`y_true` holds the labels, or None (no labels: each sample is its own
class); `y_pred` the embeddings; whatever else the loss reads (a queue and
its labels, extra negatives, prototypes, bank samples) comes as keyword
arguments that `call(y_true, y_pred, **inputs)` names in its signature, never
through attributes set on the loss. `call` returns per-sample values, and
Keras's own reduction applies `sample_weight`, the reduction and the scaling
under `tf.distribute`, exactly as `keras.losses.Loss.__call__` does. So
`model.compile(loss=SupConLoss())` works as any Keras loss does, and a
method's model passes its extras explicitly:
`loss(y, projections, sample_weight, queue=q, queue_labels=ql)`.

The contract holds on every Keras 3 backend: on JAX and PyTorch the losses
compute the same values in `keras.ops` (`supcon_tf.losses._portable`).
"""

import keras


class _Reduce(keras.losses.Loss):
    """Keras's reduction of given per-sample values (its `__call__` on
    `call(y_true, y_pred) = y_pred`)."""

    def call(self, y_true, y_pred):
        return y_pred


class ContrastiveLoss(keras.losses.Loss):
    """Base of the family's losses: per-sample values from
    `call(y_true, y_pred, **inputs)`, reduced by Keras.

    Subclasses define `call` with the keyword inputs they read. Labels are
    converted to `dtype` as Keras converts them; `y_true=None` reaches `call`
    as None.
    """

    def __call__(self, y_true, y_pred, sample_weight=None, **inputs):
        with keras.name_scope(self.name):
            y_pred = keras.tree.map_structure(
                lambda x: keras.ops.convert_to_tensor(x, dtype=self.dtype), y_pred)
            if y_true is not None:
                y_true = keras.tree.map_structure(
                    lambda x: keras.ops.convert_to_tensor(x, dtype=self.dtype), y_true)
            return self.reduce(self.call(y_true, y_pred, **inputs), sample_weight)

    def reduce(self, values, sample_weight=None):
        """Keras's reduction of per-sample `values` of this loss (the
        reduction, `sample_weight` and the scaling under `tf.distribute`), as
        `__call__` reduces `call`'s: for a model that computed the values
        itself from terms it also reads."""
        return _Reduce(reduction=self.reduction, dtype=self.dtype,
                       name=self.name)(values, values, sample_weight=sample_weight)

    def call(self, y_true, y_pred, **inputs):
        raise NotImplementedError
