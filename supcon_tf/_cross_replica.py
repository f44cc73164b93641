"""The cross-replica primitive the losses and metrics need: concatenate a
per-replica tensor over all replicas, with gradients flowing back to each
replica's slice. Public as `supcon_tf.distribute.all_gather`; it lives here so
that `losses` can use it without importing a module below it."""

import tensorflow as tf


def replica_context():
    """The current `tf.distribute.ReplicaContext` when more than one replica is
    in sync, else None (no strategy, one replica, or cross-replica context)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def _placed(ctx, x):
    """`x` with an explicit device. `ReplicaContext.all_gather` uses the input's
    device as the gather's destination; inside a `tf.function` under
    MultiWorkerMirroredStrategy tensors have none yet, and TensorFlow raises
    "destinations can not be empty"."""
    if getattr(x, "device", "x"):
        return x
    device = _replica_device(ctx)
    if device is None:
        return x
    with tf.device(device):
        return tf.identity(x)


def _replica_device(ctx):
    """This replica's device name, or None if TensorFlow does not tell."""
    try:
        return tf.nest.flatten(ctx.devices)[0]
    except (AttributeError, IndexError, RuntimeError, NotImplementedError):
        # MultiWorkerMirroredStrategy indexes its local device list with the
        # global replica id, which fails on every worker but the first; with
        # one device per worker that device is the answer.
        local = tf.distribute.get_strategy().extended.worker_devices
        return local[0] if len(local) == 1 else None


def all_gather(x, axis=0):
    """Concatenates the per-replica tensor `x` over the replicas along `axis`,
    in replica order. The gradient of replica `r`'s slice is the sum over all
    replicas of the upstream gradients of that slice. Identity outside a
    strategy or with one replica."""
    x = tf.convert_to_tensor(x)
    ctx = replica_context()
    if ctx is None:
        return x
    return ctx.all_gather(_placed(ctx, x), axis=axis)


def global_batch(x):
    """Gathers the leading (batch) axis of `x` over the replicas.

    Returns `(gathered, offset)`: `offset` is the index of this replica's first
    row in `gathered` (0 outside a strategy). Raises (when the graph runs) if
    the replicas hold batches of different sizes, which is what an uneven
    last batch of a dataset without `drop_remainder=True` gives.
    """
    x = tf.convert_to_tensor(x)
    ctx = replica_context()
    if ctx is None:
        return x, 0
    local = tf.shape(x)[0]
    sizes = ctx.all_gather(_placed(ctx, tf.reshape(local, [1])), axis=0)
    check = tf.debugging.assert_equal(
        sizes, tf.fill(tf.shape(sizes), local),
        message=("supcon_tf: the replicas hold batches of different sizes, so the "
                 "global batch cannot be split evenly. Batch the dataset with "
                 "`drop_remainder=True` and a global batch size divisible by the "
                 "number of replicas (strategy.num_replicas_in_sync). Per-replica "
                 "batch sizes"),
        summarize=64)
    with tf.control_dependencies([check]):
        gathered = ctx.all_gather(_placed(ctx, x), axis=0)
    return gathered, _offset(ctx, local)


def num_replicas():
    """`num_replicas_in_sync` of the current strategy (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def unique_ids(local_batch):
    """Sample ids `[local_batch]` unique over the global batch: this replica's
    rows of `range(global batch)` (all replicas hold `local_batch` rows)."""
    ctx = replica_context()
    return tf.range(local_batch) + (0 if ctx is None else _offset(ctx, local_batch))


def _offset(ctx, local_batch):
    """This replica's first row in the global batch (equal shares)."""
    return tf.cast(ctx.replica_id_in_sync_group, tf.int32) * local_batch


def assign(pairs):
    """Assigns `value` to each Keras `variable` of `pairs` from a replica
    context, where every replica computed the same value (all-gathered keys,
    the EMA of synchronised weights). Mirrored variables are updated on every
    device through `merge_call` and `extended.update`, as Keras's optimizers
    do; outside a strategy it is a plain `assign`. Returns nothing."""
    pairs = [(v, tf.convert_to_tensor(x)) for v, x in pairs]
    ctx = replica_context()
    if ctx is None:
        for variable, value in pairs:
            variable.assign(value)
        return

    def merge(strategy, values):
        for (variable, _), value in zip(pairs, values):
            strategy.extended.update(variable.value, lambda var, x: var.assign(x),
                                     args=(value,), group=False)

    ctx.merge_call(merge, args=([value for _, value in pairs],))


def scatter_update(variable, indices, updates):
    """`variable[indices] = updates` in place (`indices` `[n, 1]` rows of a
    Keras variable), from a replica context where every replica computed the
    same update, as `assign` does; no copy of the whole variable is made.
    Returns nothing."""
    indices, updates = tf.convert_to_tensor(indices), tf.convert_to_tensor(updates)
    if not tf.distribute.has_strategy():
        variable.value.scatter_nd_update(indices, updates)
        return

    def merge(strategy, i, u):
        strategy.extended.update(variable.value, lambda var, i, u: var.scatter_nd_update(i, u),
                                 args=(i, u), group=False)

    # A distributed variable has no scatter of its own, even on one replica.
    ctx = tf.distribute.get_replica_context()
    if ctx is None:                                     # cross-replica context
        merge(tf.distribute.get_strategy(), indices, updates)
    else:
        ctx.merge_call(merge, args=(indices, updates))
