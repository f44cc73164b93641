"""PCL's prototype term, ProtoNCE's second part (Li et al., ICLR 2021)."""

import numbers

import keras
import tensorflow as tf

from supcon_tf import _backend, _cross_replica
from supcon_tf.losses._portable import others as _portable
from supcon_tf.losses.base import ContrastiveLoss


def proto_nce(queries, centroids, phi, targets, num_negatives=16000, seed=(0, 0)):
    """Per-query ProtoNCE term of one clustering, as salesforce/PCL computes it.

    The candidates are the positive prototype of every query of the (global)
    batch, in batch order, then `r = num_negatives` prototypes drawn without
    replacement from the clusters that are no query's positive (all of them
    when fewer remain). Query `i`'s logits are `q_i . c_j / phi_j` over the
    candidates and its target is candidate `i`, its own positive: as in PCL,
    another query's positive prototype is a negative even when it is the same
    cluster.

    Under `tf.distribute` the candidates come from the global batch (the
    targets are all-gathered) and every replica draws the same negatives
    (`seed`; Philox, which draws the same with and without XLA), so the
    replicas' terms are those of one device with the global batch.

    Args:
        queries: `[batch, dim]` L2-normalised query embeddings of this replica.
        centroids: `[k, dim]` L2-normalised prototypes.
        phi: `[k]` the prototypes' concentrations (`clustering.concentration`).
        targets: `[batch]` each query's cluster id.
        num_negatives: `r`, >= 1. Defaults to 16000 (PCL's).
        seed: A stateless seed `[2]` for the draw (the same on every replica).
            On Keras's other backends, an integer or a
            `keras.random.SeedGenerator` (a pair is folded into one integer);
            the draw there is not TensorFlow's Philox draw.

    Returns:
        The per-query cross-entropy `[batch]`.
    """
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, numbers.Integral) \
            or num_negatives < 1:
        raise ValueError("`num_negatives` must be an integer >= 1. "
                         f"Received: num_negatives={num_negatives!r}")
    if not _backend.on_tensorflow(queries, centroids, phi, targets):
        if isinstance(seed, (tuple, list)):     # the stateless pair, as one integer seed
            seed = (int(seed[0]) * 1_000_003 + int(seed[1])) % (2 ** 31)
        return _portable.proto_nce(queries, centroids, phi, targets, int(num_negatives), seed)
    queries = tf.cast(queries, tf.float32)
    centroids = tf.cast(centroids, tf.float32)
    phi = tf.cast(phi, tf.float32)
    targets = tf.reshape(tf.cast(targets, tf.int32), [-1])
    k = tf.shape(centroids)[0]
    everyone, offset = _cross_replica.global_batch(targets)
    # Clusters that are nobody's positive, in a random order: the first r are the draw.
    used = tf.scatter_nd(everyone[:, None], tf.ones_like(everyone), [k]) > 0
    noise = tf.random.stateless_uniform([k], tf.cast(seed, tf.int64), alg="philox")
    order = tf.argsort(tf.where(used, 2.0, noise))            # unused first, shuffled
    r = tf.minimum(num_negatives, k - tf.reduce_sum(tf.cast(used, tf.int32)))
    # Every prototype is a column and those after the first r of the draw are
    # masked out, rather than slicing `order[:r]`: r changes from step to step,
    # and a shape that depends on data makes XLA (`jit_compile=True`) recompile or
    # pad every step. Same values: a masked column adds exp(-1e9) = 0.
    candidates = tf.concat([everyone, order], axis=0)
    logits = tf.matmul(queries, tf.gather(centroids, candidates), transpose_b=True)
    logits /= tf.gather(phi, candidates)[None]
    keep = tf.range(tf.shape(candidates)[0]) < tf.shape(everyone)[0] + r
    logits = tf.where(keep[None], logits, -1e9)
    own = tf.range(tf.shape(queries)[0]) + tf.cast(offset, tf.int32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(own, logits)


@keras.saving.register_keras_serializable(package="supcon_tf")
class ProtoNCELoss(ContrastiveLoss):
    """PCL's prototype term of one clustering (`proto_nce`) as a Keras loss.

    `y_true` holds each query's cluster id `[batch]`, `y_pred` the queries
    `[batch, dim]`; the clustering comes with the call:
    `loss(cluster_ids, queries, sample_weight, centroids=c, phi=phi, seed=s)`
    (`supcon_tf.models.PCLModel` calls it once per clustering).

    Args:
        num_negatives: `r`, negative prototypes per step, >= 1. Defaults to
            16000 (PCL's).
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"proto_nce_loss"`.
        dtype: Defaults to None (float32).

    Reference:
        Li et al., "Prototypical Contrastive Learning of Unsupervised
        Representations", ICLR 2021.
    """

    def __init__(self, num_negatives=16000, reduction="sum_over_batch_size",
                 name="proto_nce_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if isinstance(num_negatives, bool) or not isinstance(num_negatives, numbers.Integral) \
                or num_negatives < 1:
            raise ValueError("`num_negatives` must be an integer >= 1. "
                             f"Received: num_negatives={num_negatives!r}")
        self.num_negatives = int(num_negatives)

    def call(self, y_true, y_pred, centroids=None, phi=None, seed=(0, 0)):
        if centroids is None or phi is None:
            raise ValueError("ProtoNCELoss needs the clustering: `centroids=` and `phi=`.")
        return proto_nce(y_pred, centroids, phi, y_true, self.num_negatives, seed)

    def get_config(self):
        return {**super().get_config(), "num_negatives": self.num_negatives}
