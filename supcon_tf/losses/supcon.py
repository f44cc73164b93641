"""Supervised contrastive loss (SupCon) and its self-supervised special case.

Reference: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020
(https://arxiv.org/abs/2004.11362). With no labels the loss is SimCLR's
NT-Xent (Chen et al., ICML 2020, https://arxiv.org/abs/2002.05709).
"""

import keras
import tensorflow as tf

from supcon_tf import _backend, _cross_replica
from supcon_tf.losses import _fused, _general
from supcon_tf.losses._checks import (CONTRAST_MODES, DENOMINATORS, VARIANTS,  # noqa: F401
                                      _as_views, _check_options, _check_queue,
                                      _positive_number, nonfinite_marker)
from supcon_tf.losses._masks import (IDS, checked_labels, pair_positive_mask,  # noqa: F401
                                     class_ids, is_class_ids, label_kind, positive_mask,
                                     validate_labels)
from supcon_tf.losses._portable import supcon as _portable
from supcon_tf.losses.base import ContrastiveLoss

def _fused_applies(y_true, mask, contrast_mode, variant, denominator, positives_cap):
    """Whether the options are those the fused paths (`_fused`) implement."""
    return (mask is None and contrast_mode == "all" and variant == "out"
            and denominator == "all"
            and (y_true is None or is_class_ids(tf.convert_to_tensor(y_true))))


def _fused_per_anchor(features, contrast_features, y_true, batch, views, offset,
                      temperature, block_size, unit_norm, queue=None, queue_labels=None,
                      positives_cap=None):
    """Per-anchor `L_out` of the default options (or with `positives_cap`),
    rows sample-major; the queue's rows follow the batch's.

    With `positives_cap` (and labels) the kept positives are gathered (at most
    `cap` other entries per anchor) and the entries the cap leaves out are
    dropped inside the log-sum-exp's compiled pass, from class ids and ranks."""
    n_contrast = tf.shape(contrast_features)[0]
    dim = tf.shape(features)[-1]
    contrast = tf.reshape(contrast_features, [-1, dim])
    if y_true is None:
        seg_contrast = tf.range(n_contrast)
        if queue is not None:
            # Every queue entry is a class of its own: a negative.
            seg_contrast = tf.concat([seg_contrast, n_contrast + tf.range(tf.shape(queue)[0])], 0)
    else:
        y_true, check = checked_labels(y_true, batch)
        with tf.control_dependencies([check]):
            labels = class_ids(_cross_replica.all_gather(y_true))
            if queue is not None:
                labels = tf.concat([labels, class_ids(queue_labels, "queue_labels")], 0)
            seg_contrast = _fused.class_segments(labels)
    seg_anchor = seg_contrast[offset:offset + batch]
    seg_rows = tf.repeat(seg_contrast[:n_contrast], views)
    anchor = tf.reshape(features, [-1, dim])
    positives = excluded = None
    if positives_cap is not None and y_true is not None:
        # Entries: the global batch's samples, then the queue's (one row each).
        n_queue = 0 if queue is None else tf.shape(queue)[0]
        sums = tf.reduce_sum(contrast_features, axis=1)
        rows_per = tf.fill([n_contrast], tf.cast(views, tf.float32))
        if queue is not None:
            sums = tf.concat([sums, queue], 0)
            rows_per = tf.concat([rows_per, tf.ones([n_queue])], 0)
        ranks = _general.class_ranks(labels)
        samples = offset + tf.range(batch)
        total, n_pos = _fused.capped_positives(sums, rows_per, seg_contrast, ranks, samples,
                                               views, int(positives_cap))
        positives = (total - anchor, n_pos)
        col_sample = tf.concat([tf.repeat(tf.range(n_contrast), views),
                                n_contrast + tf.range(n_queue)], 0)
        col_rank = tf.concat([tf.repeat(ranks[:n_contrast], views), ranks[n_contrast:]], 0)
        excluded = (tf.repeat(seg_anchor, views), tf.repeat(tf.gather(ranks, samples), views),
                    tf.repeat(samples, views), None, col_rank, col_sample, int(positives_cap))
    grad_rows = None
    if queue is not None:
        grad_rows = tf.shape(contrast)[0]           # the queue's rows take no gradient
        contrast = tf.concat([contrast, queue], 0)
        seg_rows = tf.concat([seg_rows, seg_contrast[n_contrast:]], 0)
    if excluded is not None:
        excluded = excluded[:3] + (seg_rows,) + excluded[4:]
    return _fused.supcon_out_per_anchor(
        anchor, contrast, tf.repeat(seg_anchor, views), seg_rows,
        offset * views, float(temperature), block_size, unit_norm, grad_rows,
        positives=positives, excluded=excluded)


def supcon_loss(y_true, y_pred, mask=None, temperature=0.1, base_temperature=None,
                contrast_mode="all", variant="out", denominator="all",
                positives_cap=None, normalize=True, block_size=None, fused=True,
                queue=None, queue_labels=None):
    """Supervised contrastive loss, one value per sample.

    Every view of every sample in `y_pred` is contrasted against every other
    view in the batch. For an anchor view `a` with positives `P(a)` (the views of
    samples that share its class, and its own other views) the paper's `L_out`
    loss is

        -(1 / |P(a)|) * sum_{p in P(a)} log(exp(z_a . z_p / T) / den(a, p))

    and `L_in` moves the mean over positives inside the log. `den(a, p)` sums
    `exp(z_a . z_c / T)` over the views `c` chosen by `denominator`.
    With `y_true=None` the positives of an anchor are only the other views of
    its own sample: this is SimCLR's NT-Xent loss.

    Args:
        y_true: Labels, or None. Integer class ids `[batch]` or `[batch, 1]`;
            or one-hot / multi-hot `[batch, classes]`, where samples that share
            any class are positives; or None for the self-supervised loss.
        y_pred: Embeddings `[batch, views, dim]` (trailing dims after `views`
            are flattened), or `[batch, dim]` for one view. Any float dtype;
            the loss is computed in float32.
        mask: Optional `[batch, batch]` 0/1 matrix used instead of labels:
            `mask[i, j] = 1` makes sample `j` a positive of sample `i` (it may be
            asymmetric; non-zero counts as 1). It is used as given, as in the
            reference implementation: the other views of sample `i` are its
            positives only if `mask[i, i] = 1`. Defaults to None.
        temperature: Softmax temperature `T` > 0. Defaults to 0.1.
        base_temperature: The loss is multiplied by
            `temperature / base_temperature`. Defaults to None, meaning equal
            to `temperature` (no rescaling).
        contrast_mode: `"all"`: every view is an anchor; `"one"`: only view 0 of
            each sample is an anchor (contrasted against all views).
            Defaults to `"all"`.
        variant: `"out"` (the paper's `L_out`, mean over positives outside the
            log) or `"in"` (`L_in`, inside the log). Defaults to `"out"`.
        denominator: `"all"`: every other view except capped-out ones;
            `"one_positive"`: all negatives plus only the positive in the
            numerator; `"only_negatives"`: the negatives alone.
            Defaults to `"all"`.
        positives_cap: None, or an integer `k >= 0`: only the first `k` other
            samples of the anchor's class, in batch order, are its positives
            (with all their views); the anchor's own other views stay positives.
            Capped-out samples are neither positives nor negatives.
            Defaults to None (no cap).
        normalize: L2-normalise the embeddings along the feature axis first.
            Defaults to True.
        block_size: None, or an integer >= 1: compute the loss and its
            gradient `block_size` anchor rows at a time, so the extra memory
            grows as O(block_size x N) instead of O(N^2) for N = batch x views
            rows. A block's forward pass also takes its share of the
            gradient for a mean over the batch, which the backward pass
            scales; any other upstream gradient (per-sample weights)
            recomputes each block's logits (one more N x N x dim product).
            Every option, label kind, `mask` and `queue` works in blocks, and
            under `jit_compile=True`. None chooses when the function is traced:
            blockwise with 1024-row blocks above 16384 x 16384 logits, else
            in one block; when the number of rows is not known then (a
            dataset batched without `drop_remainder=True`), in one block.
            Defaults to None.
        fused: With the default options (class-id labels or none, no
            `mask`, `contrast_mode="all"`, `variant="out"`, `denominator="all"`;
            `positives_cap` allowed), compute the loss from per-class sums of
            the embeddings (with `positives_cap`, of the kept positives) and
            one log-sum-exp over the logits with its own gradient, instead of
            building masks. False forces the general
            path (the one of every other option), which gives the same values
            and gradients (to float32 round-off) more slowly. Defaults to True.
        queue: Optional `[K, dim]` embeddings added to every anchor's contrast
            set after the views of the (global) batch, e.g. MoCo's queue of
            past keys (`supcon_tf.memory.FeatureQueue`). No gradient flows
            into it; it is L2-normalised with the batch when `normalize`.
            With `y_true=None` every entry is a negative; with labels the
            entries of the anchor's class are positives (counted after the
            batch's by `positives_cap`). Defaults to None.
        queue_labels: The queue's labels `[K]`, of the same kind as
            `y_true`; required with labels and a queue, and an error without
            labels. Defaults to None.

    Returns:
        A float32 tensor `[batch]`: for each sample, the mean of the loss over
        its anchor views. An anchor with no positive contributes 0 (as in both
        published reference implementations); so does an anchor with no
        negative under `denominator="only_negatives"`. For finite embeddings
        the loss is never NaN; a NaN or infinite embedding (or queue entry)
        makes every value NaN, on every path, so that Keras's NaN handling
        (`TerminateOnNaN`, the NaN check of `fit`) sees it.

    Raises:
        ValueError: `y_pred` of rank < 2, or with no sample, view or feature;
            one view and no labels (no anchor could have a positive: pass
            `[batch, views, dim]`, not the views concatenated along the batch);
            labels `[batch, classes]` that are not 0/1, or float class ids
            that are not whole numbers (when the graph runs:
            `tf.errors.InvalidArgumentError`); a queue of another dim, or
            without `queue_labels` when there are labels; a number of labels different from
            the batch size; both `y_true` and `mask` given; a `mask` that is not
            `[batch, batch]`; an unknown `contrast_mode`, `variant` or
            `denominator`; `temperature <= 0` or `base_temperature <= 0`;
            `positives_cap < 0`; `block_size < 1`. Shapes only known when the graph
            runs are checked then (`tf.errors.InvalidArgumentError`).
        TypeError: a non-numeric `temperature`, `base_temperature`,
            `positives_cap` or `block_size`; string or bool labels.

    Example:

    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(4, 2, 8)).astype("float32")
    >>> loss = supcon_loss(np.array([0, 0, 1, 1]), z, temperature=0.1)
    >>> loss.shape
    TensorShape([4])

    Reference:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.
    """
    if not _backend.on_tensorflow(y_true, y_pred, mask, queue, queue_labels):
        return _portable.supcon_loss(
            y_true, y_pred, mask, temperature, base_temperature, contrast_mode, variant,
            denominator, positives_cap, normalize, block_size, fused, queue, queue_labels)
    temperature, base_temperature = _check_options(
        temperature, base_temperature, contrast_mode, variant, denominator,
        positives_cap, block_size)
    features = _as_views(y_pred)
    if y_true is not None:
        y_true = validate_labels(y_true)      # dtype and rank, before any use
    queue, queue_labels = _check_queue(queue, queue_labels, features, y_true, mask)
    if normalize:
        features = tf.math.l2_normalize(features, axis=-1)
        if queue is not None:
            queue = tf.math.l2_normalize(queue, axis=-1)
    batch = features.shape[0]
    if batch is None:
        batch = tf.shape(features)[0]
    views = features.shape[1]
    if views is None:
        views = tf.shape(features)[1]
    if y_true is None and mask is None and views == 1:
        raise ValueError(
            "With no labels (y_true=None) and one view per sample, no anchor has a "
            "positive and the loss is 0. Pass the views as `y_pred` of shape "
            "[batch, views, dim] (e.g. tf.stack([z1, z2], axis=1)), not concatenated "
            "along the batch. Received: y_pred.shape="
            f"{tf.convert_to_tensor(y_pred).shape}")

    # Inside a replica context the anchors are this replica's views and the
    # contrast set is the global batch (gradients flow back to each replica).
    contrast_features, offset = _cross_replica.global_batch(features)
    poison = nonfinite_marker(contrast_features, queue)
    n_contrast = contrast_features.shape[0]
    if n_contrast is None:
        n_contrast = tf.shape(contrast_features)[0]
    if (block_size is not None or fused) and _fused_applies(
            y_true, mask, contrast_mode, variant, denominator, positives_cap):
        per_anchor = _fused_per_anchor(features, contrast_features, y_true, batch,
                                       views, offset, temperature, block_size,
                                       unit_norm=normalize, queue=queue,
                                       queue_labels=queue_labels, positives_cap=positives_cap)
        per_anchor *= temperature / base_temperature
        return tf.reduce_mean(tf.reshape(per_anchor, [batch, views]), axis=1) + poison
    n_queue = 0 if queue is None else tf.shape(queue)[0]
    if mask is not None:
        # Checks the mask's shape (and that labels were not given as well).
        mask = pair_positive_mask(y_true, None, mask, batch, n_contrast, offset, dtype=tf.bool)
        y_contrast = check = None
    elif y_true is not None:
        y_true, check = checked_labels(y_true, batch)
        y_contrast = _cross_replica.all_gather(y_true)
    else:
        y_contrast = check = None
    relation = _general.sample_relation(
        y_true, y_contrast, queue_labels, None if y_true is None else label_kind(y_true),
        mask, offset, n_contrast + n_queue, positives_cap)
    # View-major layout, as in the reference code: row v * B + i is view v of
    # sample i; the queue's entries are the last columns.
    dim = tf.shape(features)[-1]
    contrast = tf.reshape(tf.transpose(contrast_features, [1, 0, 2]), [-1, dim])
    if queue is not None:
        contrast = tf.concat([contrast, queue], 0)
    if contrast_mode == "one":
        anchor, anchor_views = features[:, 0], 1
    else:
        anchor = tf.reshape(tf.transpose(features, [1, 0, 2]), [-1, dim])
        anchor_views = views
    if block_size is None:
        rows = (anchor.shape[0], contrast.shape[0])
        if None not in rows and rows[0] * rows[1] > _fused.AUTO_BLOCKWISE_ABOVE:
            block_size = _fused.AUTO_BLOCK_SIZE

    labels = None
    if mask is None and (y_true is None or label_kind(y_true) == IDS):
        labels = _general.label_columns(y_true, y_contrast, queue_labels, offset, batch,
                                        n_contrast, views, n_queue, positives_cap)
    blocks = _general.Blocks(relation, batch, n_contrast, views, n_queue, offset,
                             temperature, variant, denominator, unit_norm=normalize,
                             labels=labels)
    with tf.control_dependencies([] if check is None else [check]):
        per_anchor = _general.per_anchor_loss(anchor, contrast, blocks, block_size)
    per_anchor *= temperature / base_temperature
    per_sample = tf.reduce_mean(tf.reshape(per_anchor, [anchor_views, -1]), axis=0)
    return per_sample + poison


@keras.saving.register_keras_serializable(package="supcon_tf")
class SupConLoss(ContrastiveLoss):
    """Supervised contrastive loss as a Keras loss.

    Plug it into any model whose output is `[batch, views, dim]`
    (`[batch, dim]` means one view): `model.compile(loss=SupConLoss())`.
    `call` returns the per-sample losses of `supcon_loss`, and the Keras base
    class applies `sample_weight` and the reduction. With `y_true=None` it is
    SimCLR's NT-Xent loss. All options are those of `supcon_loss`, which
    documents them and the errors raised for bad input.

    Args:
        temperature: Softmax temperature > 0. Defaults to 0.1.
        base_temperature: The loss is scaled by `temperature /
            base_temperature`. Defaults to None (equal to `temperature`).
        contrast_mode: `"all"` or `"one"`. Defaults to `"all"`.
        variant: `"out"` or `"in"`. Defaults to `"out"`.
        denominator: `"all"`, `"one_positive"` or `"only_negatives"`.
            Defaults to `"all"`.
        positives_cap: None or an integer >= 0. Defaults to None.
        normalize: L2-normalise embeddings inside the loss. Defaults to True.
        block_size: None (automatic) or anchor rows per block of the
            memory-bounded path (see `supcon_loss`). Defaults to None.
        reduction: Keras reduction of the per-sample values.
            Defaults to `"sum_over_batch_size"`.
        name: Name of the loss. Defaults to `"supcon_loss"`.
        dtype: Dtype of the loss computation. Defaults to None (float32).

    Example:

    >>> import numpy as np
    >>> loss = SupConLoss(temperature=0.1)
    >>> z = np.random.default_rng(0).normal(size=(4, 2, 8)).astype("float32")
    >>> float(loss(np.array([0, 0, 1, 1]), z)) > 0
    True

    Reference:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.
    """

    def __init__(self, temperature=0.1, base_temperature=None, contrast_mode="all",
                 variant="out", denominator="all", positives_cap=None,
                 normalize=True, block_size=None, reduction="sum_over_batch_size",
                 name="supcon_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        temperature, base_temperature_ = _check_options(
            temperature, base_temperature, contrast_mode, variant, denominator,
            positives_cap, block_size)
        self.temperature = temperature
        self.base_temperature = None if base_temperature is None else base_temperature_
        self.contrast_mode = contrast_mode
        self.variant = variant
        self.denominator = denominator
        self.positives_cap = None if positives_cap is None else int(positives_cap)
        self.normalize = normalize
        self.block_size = None if block_size is None else int(block_size)

    def __call__(self, y_true, y_pred, sample_weight=None, queue=None, queue_labels=None):
        """As `keras.losses.Loss.__call__`, plus the optional `queue` and
        `queue_labels` of `supcon_loss`."""
        if not _backend.on_tensorflow(y_true, y_pred, queue, queue_labels):
            return super().__call__(y_true, y_pred, sample_weight=sample_weight, queue=queue,
                                    queue_labels=queue_labels)
        if y_true is None:
            views = tf.convert_to_tensor(y_pred).shape
            if views.rank == 2 or (views.rank is not None and views.rank > 2 and views[1] == 1):
                # The ids below would hide this from supcon_loss.
                supcon_loss(None, y_pred)
            if queue_labels is not None:
                _check_queue(queue, queue_labels, _as_views(y_pred), None, None)
            # Self-supervised: every sample is its own class. Unique ids give
            # exactly the identity positive mask, and survive the base class's
            # conversion of `y_true` to a tensor.
            # Inside a replica context the ids are offset by the replica, so
            # they stay unique over the global batch; queue entries get
            # negative ids, unlike any sample's.
            y_true = _cross_replica.unique_ids(tf.shape(tf.convert_to_tensor(y_pred))[0])
            if queue is not None:
                queue_labels = -1 - tf.range(tf.shape(tf.convert_to_tensor(queue))[0])
        else:
            y_true = validate_labels(y_true)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight, queue=queue,
                                queue_labels=queue_labels)

    def call(self, y_true, y_pred, queue=None, queue_labels=None):
        return supcon_loss(
            y_true, y_pred, temperature=self.temperature,
            base_temperature=self.base_temperature,
            contrast_mode=self.contrast_mode, variant=self.variant,
            denominator=self.denominator, positives_cap=self.positives_cap,
            normalize=self.normalize, block_size=self.block_size,
            queue=queue, queue_labels=queue_labels)

    def get_config(self):
        config = super().get_config()
        config.update({
            "temperature": self.temperature,
            "base_temperature": self.base_temperature,
            "contrast_mode": self.contrast_mode,
            "variant": self.variant,
            "denominator": self.denominator,
            "positives_cap": self.positives_cap,
            "normalize": self.normalize,
            "block_size": self.block_size,
        })
        return config
