"""SupCon (every option), MoCo and HCL in `keras.ops`: the definitions of
`supcon_tf.losses.supcon_loss`, `moco_loss` and `hard_negative_terms`
computed densely on one device."""

from keras import ops

from supcon_tf.losses._checks import _check_options, _positive_number
from supcon_tf.losses._portable.common import (as_views, check_count, check_queue,
                                               l2_normalize, labels_valid, masked_logsumexp,
                                               nonfinite_marker, same_class, shape_of, shown,
                                               validate_labels)


def _queue_labels(queue_labels, kind):
    """The queue's labels in the batch's comparable form, and their check."""
    q, q_kind = queue_labels
    if q_kind != kind:
        raise ValueError(
            "`queue_labels` must be of the same kind as `y_true` (class ids, or "
            f"multi-hot with the same classes). Received: queue_labels.shape="
            f"{shown(shape_of(q))}")
    return labels_valid(q, kind, "queue_labels")


def _sample_relation(y, kind, queue_labels, mask, batch, n_queue, positives_cap):
    """The sample-level `(positive, excluded)` bool matrices `[B, B + K]` and
    the labels' check term (`_general.sample_relation`'s definition)."""
    n = batch + n_queue
    own = ops.equal(ops.arange(batch)[:, None], ops.arange(n)[None, :])
    term = ops.zeros((), "float32")
    if mask is not None:
        pos = ops.not_equal(mask, 0)
    elif y is None:
        pos = own
    else:
        y, term = labels_valid(y, kind)
        columns = y
        if queue_labels is not None:
            q, q_term = _queue_labels(queue_labels, kind)
            columns, term = ops.concatenate([y, q], 0), term + q_term
        pos = ops.logical_or(same_class(y, columns, kind), own)
    if positives_cap is None:
        return pos, ops.zeros_like(pos), term
    others = ops.logical_and(pos, ops.logical_not(own))
    rank = ops.cumsum(ops.cast(others, "int32"), axis=1)            # 1-based on positives
    kept = ops.logical_and(others, rank <= positives_cap)
    excluded = ops.logical_and(others, ops.logical_not(kept))
    return ops.logical_or(kept, ops.logical_and(pos, own)), excluded, term


def _per_anchor(logits, pos, neg, variant, denominator):
    """Per-anchor loss from the logits and the masks (`_general._forward`)."""
    if denominator == "one_positive":
        lse, has_neg = masked_logsumexp(logits, neg)
        # log(exp(l) / (exp(l) + sum_neg)) = -softplus(log_sum_neg - l); with no
        # negative, log 1 = 0.
        log_prob = ops.where(has_neg, -ops.softplus(lse - logits), 0.0)
        valid = ops.ones_like(has_neg)
    else:
        den = ops.logical_or(pos, neg) if denominator == "all" else neg
        lse, valid = masked_logsumexp(logits, den)
        log_prob = logits - lse
    n_pos = ops.sum(ops.cast(pos, "float32"), axis=1)
    has_pos = n_pos > 0
    safe_n_pos = ops.where(has_pos, n_pos, 1.0)
    if variant == "out":
        per_anchor = -ops.sum(ops.where(pos, log_prob, 0.0), axis=1) / safe_n_pos
    else:
        lse_pos = masked_logsumexp(log_prob, pos)[0][:, 0]
        per_anchor = -(lse_pos - ops.log(safe_n_pos))
    return ops.where(ops.logical_and(has_pos, valid[:, 0]), per_anchor, 0.0)


def supcon_loss(y_true, y_pred, mask=None, temperature=0.1, base_temperature=None,
                contrast_mode="all", variant="out", denominator="all",
                positives_cap=None, normalize=True, block_size=None, fused=True,
                queue=None, queue_labels=None):
    """`supcon_tf.losses.supcon_loss` in `keras.ops`."""
    del fused  # one path here
    temperature, base_temperature = _check_options(
        temperature, base_temperature, contrast_mode, variant, denominator,
        positives_cap, block_size)
    features = as_views(y_pred)
    batch, views, dim = features.shape
    kind = None
    if y_true is not None:
        if mask is not None:
            raise ValueError(
                "Pass either `y_true` (labels) or `mask`, not both. Received: y_true with "
                f"shape {shown(shape_of(ops.convert_to_tensor(y_true)))} and mask with shape "
                f"{shown(shape_of(ops.convert_to_tensor(mask)))}")
        y_true, kind = validate_labels(y_true)
    queue, queue_labels = check_queue(queue, queue_labels, dim, y_true is not None, mask)
    if y_true is None and mask is None and views == 1:
        raise ValueError(
            "With no labels (y_true=None) and one view per sample, no anchor has a "
            "positive and the loss is 0. Pass the views as `y_pred` of shape "
            "[batch, views, dim] (e.g. tf.stack([z1, z2], axis=1)), not concatenated "
            f"along the batch. Received: y_pred.shape={shown(shape_of(ops.convert_to_tensor(y_pred)))}")
    if y_true is not None:
        check_count(y_true, batch)
    if mask is not None:
        mask = ops.convert_to_tensor(mask)
        if tuple(mask.shape) != (batch, batch):
            raise ValueError(
                f"`mask` must be a [{batch}, {batch}] matrix (inside a replica "
                f"context: [local batch, global batch]). Received: mask.shape={shown(shape_of(mask))}")
    if normalize:
        features = l2_normalize(features)
        queue = None if queue is None else l2_normalize(queue)
    poison = nonfinite_marker(features, queue)
    n_queue = 0 if queue is None else queue.shape[0]
    sample_pos, sample_out, term = _sample_relation(
        y_true, kind, queue_labels, mask, batch, n_queue, positives_cap)

    # View-major rows, as the reference code: row v * B + i is view v of
    # sample i; the queue's entries are the last columns.
    contrast = ops.reshape(ops.transpose(features, (1, 0, 2)), (views * batch, dim))
    anchor_views = 1 if contrast_mode == "one" else views
    anchor = contrast[:anchor_views * batch]
    if queue is not None:
        contrast = ops.concatenate([contrast, queue], 0)
    n_anchor, n_contrast = anchor_views * batch, contrast.shape[0]
    col_sample = ops.concatenate([ops.tile(ops.arange(batch), (views,)),
                                  batch + ops.arange(n_queue, dtype="int32")], 0)
    row_sample = ops.tile(ops.arange(batch), (anchor_views,))

    def expand(sample_level):
        return ops.take(ops.take(sample_level, row_sample, axis=0), col_sample, axis=1)

    not_self = ops.not_equal(ops.arange(n_contrast)[None, :], ops.arange(n_anchor)[:, None])
    pos = ops.logical_and(expand(sample_pos), not_self)
    neg = ops.logical_not(ops.logical_or(ops.logical_or(pos, expand(sample_out)),
                                         ops.logical_not(not_self)))
    logits = ops.matmul(anchor * (1.0 / temperature), ops.transpose(contrast))
    per_anchor = _per_anchor(logits, pos, neg, variant, denominator)
    per_anchor = per_anchor * (temperature / base_temperature)
    per_sample = ops.mean(ops.reshape(per_anchor, (anchor_views, batch)), axis=0)
    return per_sample + poison + term


def moco_loss(y_true, y_pred, queue=None, queue_labels=None, temperature=0.2,
              normalize=True, extra_negatives=None):
    """`supcon_tf.losses.moco_loss` in `keras.ops`."""
    temperature = _positive_number(temperature, "temperature")
    pairs = as_views(y_pred)
    if pairs.shape[1] != 2:
        raise ValueError("`y_pred` must be [batch, 2, dim]: queries and their keys. "
                         f"Received: y_pred.shape={shown(shape_of(ops.convert_to_tensor(y_pred)))}")
    batch, _, dim = pairs.shape
    kind = None
    if y_true is not None:
        y_true, kind = validate_labels(y_true)
        if kind != "ids":
            raise ValueError("MoCo's loss takes class ids [batch] or [batch, 1]. "
                             f"Received: y_true.shape={shown(shape_of(y_true))}")
    queue, queue_labels = check_queue(queue, queue_labels, dim, y_true is not None)
    extra = None
    if extra_negatives is not None:
        extra = ops.stop_gradient(ops.cast(ops.convert_to_tensor(extra_negatives), "float32"))
        if len(extra.shape) != 3 or extra.shape[0] != batch or extra.shape[2] != dim:
            raise ValueError(
                "`extra_negatives` must be [batch, S, dim] with the queries' batch and dim "
                f"({batch}, {dim}). Received: extra_negatives.shape={shown(shape_of(extra))}")
    query, key = pairs[:, 0], ops.stop_gradient(pairs[:, 1])
    if normalize:
        query, key = l2_normalize(query), l2_normalize(key)
        queue = None if queue is None else l2_normalize(queue)
        extra = None if extra is None else l2_normalize(extra)
    poison = nonfinite_marker(query, key, queue, extra)
    queue_logits = extra_logits = extra_present = None
    if queue is not None:
        queue_logits = ops.matmul(query, ops.transpose(queue)) / temperature
    if extra is not None:
        extra_logits = ops.einsum("bd,bsd->bs", query, extra) / temperature
        extra_present = ops.any(ops.not_equal(extra, 0.0), axis=-1)        # [B, S]
    if y_true is None:
        positive = ops.sum(query * key, axis=1) / temperature
        if queue is None and extra is None:
            return ops.zeros_like(positive) + poison
        # -log(e^pos / (e^pos + sum_j e^neg_j)) = softplus(lse_neg - pos).
        negatives = [t for t in (queue_logits, extra_logits) if t is not None]
        present = ([] if queue is None else [ops.ones(queue_logits.shape, "bool")]) + (
            [] if extra is None else [extra_present])
        lse_neg, has_neg = masked_logsumexp(ops.concatenate(negatives, 1),
                                            ops.concatenate(present, 1))
        return ops.where(has_neg[:, 0], ops.softplus(lse_neg[:, 0] - positive), 0.0) + poison
    check_count(y_true, batch)
    y, term = labels_valid(y_true, kind)
    classes = y
    if queue_labels is not None:
        q, q_term = _queue_labels(queue_labels, kind)
        classes, term = ops.concatenate([y, q], 0), term + q_term
    # SupCon's L_out over the batch's keys and the queue (no gradient into
    # either); MoCHi's negatives join the denominator only.
    logits = ops.matmul(query, ops.transpose(key)) / temperature
    if queue is not None:
        logits = ops.concatenate([logits, queue_logits], 1)
    pos = same_class(y, classes, kind)
    if extra is None:
        lse = masked_logsumexp(logits, ops.ones(logits.shape, "bool"))[0]
    else:
        lse = masked_logsumexp(ops.concatenate([logits, extra_logits], 1), ops.concatenate(
            [ops.ones(logits.shape, "bool"), extra_present], 1))[0]
    mean_pos = ops.sum(ops.where(pos, logits, 0.0), axis=1) / ops.sum(ops.cast(pos, "float32"), axis=1)
    return lse[:, 0] - mean_pos + poison + term


def hard_negative_terms(y_true, y_pred, temperature, tau_plus, beta, normalize=True):
    """`supcon_tf.losses.hard_negative_terms` in `keras.ops` (options checked
    by the caller)."""
    features = as_views(y_pred)
    if len(features.shape) != 3 or features.shape[1] != 2:
        raise ValueError("`y_pred` must be [batch, 2, dim]: two views of each sample. "
                         f"Received: y_pred.shape={shown(shape_of(ops.convert_to_tensor(y_pred)))}")
    batch, _, dim = features.shape
    if normalize:
        features = l2_normalize(features)
    poison = nonfinite_marker(features)
    # Rows sample-major: row 2i + v is view v of sample i.
    rows = ops.reshape(features, (2 * batch, dim))
    logits = ops.matmul(rows, ops.transpose(rows)) / temperature
    positive = ops.repeat(ops.sum(features[:, 0] * features[:, 1], axis=-1) / temperature, 2)
    sample = ops.repeat(ops.arange(batch), 2)
    negative = ops.not_equal(sample[:, None], sample[None, :])
    term = ops.zeros((), "float32")
    if y_true is not None:
        y_true, kind = validate_labels(y_true)
        check_count(y_true, batch)
        y, term = labels_valid(y_true, kind)
        y = ops.repeat(y, 2, axis=0)
        negative = ops.logical_and(negative, ops.logical_not(same_class(y, y, kind)))
    count = ops.sum(ops.cast(negative, "float32"), axis=1)
    has_negatives = count > 0
    safe_count = ops.where(has_negatives, count, 1.0)
    lse_hard = masked_logsumexp((1.0 + beta) * logits, negative)[0][:, 0]
    if beta == 0.0:
        log_reweighted = lse_hard
    else:
        lse_imp = masked_logsumexp(beta * logits, negative)[0][:, 0]
        log_reweighted = ops.log(safe_count) + lse_hard - lse_imp
    shift = ops.stop_gradient(ops.maximum(log_reweighted, positive))
    pos = ops.exp(positive - shift)
    ng = (ops.exp(log_reweighted - shift) - tau_plus * safe_count * pos) / (1.0 - tau_plus)
    floor = safe_count * ops.exp(-1.0 / temperature - shift)
    clamped = ops.logical_and(has_negatives, ng <= floor)
    ng = ops.maximum(ng, floor)
    keep = ops.logical_and(has_negatives, ng > 0)
    log_ng = ops.log(ops.where(keep, ng, 1.0)) + shift
    per_anchor = ops.where(keep, ops.softplus(log_ng - positive), 0.0)
    clamped = ops.mean(ops.reshape(ops.cast(clamped, "float32"), (batch, 2)), axis=1)
    return {"loss": ops.mean(ops.reshape(per_anchor, (batch, 2)), axis=1) + poison + term,
            "clamped": clamped + poison}
