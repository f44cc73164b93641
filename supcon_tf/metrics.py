"""Metrics of contrastive training: how often an anchor's nearest neighbour
is a positive, and whether the outputs collapsed."""

import tensorflow as tf

from supcon_tf import _cross_replica
from supcon_tf.losses._masks import pair_positive_mask


def contrastive_accuracy(y_true, projections):
    """How often an anchor's nearest neighbour among the other views is a positive.

    Args:
        y_true: Labels as for `SupConLoss` (class ids, one-/multi-hot), or None:
            then only the other views of the same sample are positives.
        projections: `[batch, views, dim]` embeddings.

    Returns:
        A float32 scalar in [0, 1]: the fraction of the `batch * views` anchors
        whose most similar other view (cosine) is a positive.
    """
    z = tf.math.l2_normalize(tf.cast(projections, tf.float32), axis=-1)
    batch, views = tf.shape(z)[0], tf.shape(z)[1]
    # Inside a replica context the neighbours come from the global batch.
    zg, offset = _cross_replica.global_batch(z)
    yg = None if y_true is None else _cross_replica.all_gather(y_true)
    n_global = tf.shape(zg)[0]
    anchors = tf.reshape(z, [batch * views, -1])               # sample-major
    contrast = tf.reshape(zg, [n_global * views, -1])
    sim = tf.matmul(anchors, contrast, transpose_b=True)
    own = tf.equal(tf.range(batch * views)[:, None] + offset * views,
                   tf.range(n_global * views)[None, :])
    sim = tf.where(own, -float("inf"), sim)
    nearest = tf.argmax(sim, axis=1, output_type=tf.int32) // views
    sample = tf.range(batch * views) // views
    pos = pair_positive_mask(y_true, yg, None, batch, n_global, offset)
    hit = tf.gather_nd(pos, tf.stack([sample, nearest], axis=1))
    return tf.reduce_mean(hit)


def query_key_accuracy(y_true, queries, keys):
    """How often a query's most similar key of the (global) batch is a
    positive: its own key, or with labels one of its class. MoCo's view of
    `contrastive_accuracy`.

    Args:
        y_true: Class ids `[batch]`, or None.
        queries, keys: `[batch, dim]`.

    Returns:
        A float32 scalar in [0, 1].
    """
    q = tf.math.l2_normalize(tf.cast(queries, tf.float32), axis=-1)
    k = tf.math.l2_normalize(tf.cast(keys, tf.float32), axis=-1)
    kg, offset = _cross_replica.global_batch(k)
    nearest = tf.argmax(tf.matmul(q, kg, transpose_b=True), axis=1, output_type=tf.int32)
    batch = tf.shape(q)[0]
    yg = None if y_true is None else _cross_replica.all_gather(y_true)
    pos = pair_positive_mask(y_true, yg, None, batch, tf.shape(kg)[0], offset)
    return tf.reduce_mean(tf.gather_nd(pos, tf.stack([tf.range(batch), nearest], axis=1)))


def output_std(outputs):
    """SimSiam's collapse monitor: the standard deviation over the (global)
    batch of each dimension of the L2-normalised outputs, averaged over the
    dimensions. About `1 / sqrt(dim)` when the outputs spread over the sphere;
    0 when they collapse to one point.

    Args:
        outputs: `[batch, dim]` embeddings.

    Returns:
        A float32 scalar >= 0.

    Reference:
        Chen & He, "Exploring Simple Siamese Representation Learning", CVPR
        2021, section 4.1 and figure 2.
    """
    z = tf.math.l2_normalize(tf.cast(outputs, tf.float32), axis=-1)
    z, _ = _cross_replica.global_batch(tf.stop_gradient(z))
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0))
