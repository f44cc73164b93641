"""What `ContrastiveModel.fit`, `evaluate` and `predict` check and work
around before Keras runs them: even batches under several replicas, a new
step function when the input rank changes, the planned length of `fit`, and
Keras 3's symbolic build under a strategy (the compiled loss built from the
views; under MultiWorkerMirroredStrategy from one replica's batch)."""

import warnings

import keras
import tensorflow as tf

from supcon_tf.distribute import check_dataset, is_multi_worker


def _input_rank(x, y=None):
    """The ranks of the inputs' parts (images, labels, weights: of an array,
    a tensor or a dataset's elements) as a tuple, or None when unknown."""
    if isinstance(x, tf.data.Dataset):
        parts = tf.nest.flatten(x.element_spec)
    else:
        parts = [v for v in tf.nest.flatten((x, y)) if v is not None]
    ranks = []
    for part in parts:
        shape = getattr(part, "shape", None)
        rank = getattr(shape, "rank", None) if isinstance(shape, tf.TensorShape) else (
            None if shape is None else len(shape))
        ranks.append(rank)
    if not ranks or ranks[0] is None:
        return None
    return tuple(ranks)


def _without_remainder(x, y, kwargs, batch_size):
    """Arrays `(x, y)` and `fit`'s `sample_weight` as a dataset of whole
    batches (reshuffled each epoch when `shuffle`), the `fit` arguments it
    replaces taken out of `kwargs`. Returns `(dataset, None)`."""
    sample_weight = kwargs.pop("sample_weight", None)
    parts = tuple(v for v in (x, y, sample_weight) if v is not None)
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if kwargs.pop("shuffle", True):
        ds = ds.shuffle(int(x.shape[0]), reshuffle_each_iteration=True)
    kwargs.pop("batch_size", None)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE), None


def _drop_array_remainder(x, y, kwargs, drop, why):
    """Arrays whose last batch `drop(remainder, n, batch_size)` rejects lose
    it (with a warning saying `why`); otherwise `(x, y)` as they are."""
    batch_size = kwargs.get("batch_size") or 32
    n = int(x.shape[0])
    if not drop(n % batch_size, n, batch_size):
        return x, y
    warnings.warn(f"{why}: the last batch of {n % batch_size} is left out of each epoch "
                  f"(n={n}, batch_size={batch_size}).", stacklevel=4)
    return _without_remainder(x, y, kwargs, batch_size)


def quiet_dataset_shuffle(x, kwargs):
    """A dataset is shuffled by its pipeline, not by `fit`: unless the caller
    asked for `shuffle`, pass `shuffle=False` so Keras does not warn on every
    `fit` that its default `shuffle=True` is ignored."""
    if isinstance(x, tf.data.Dataset):
        kwargs.setdefault("shuffle", False)


class _FitLength(keras.callbacks.Callback):
    """Tells the model how many steps the `fit` call plans and the epoch it
    starts from (for schedules that follow training progress, such as BYOL's
    momentum), at the first epoch: after `BackupAndRestore` restored a run."""

    def on_train_begin(self, logs=None):
        self._told = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._told:
            self._told = True
            self.model.on_fit_begin(self.params.get("epochs"), self.params.get("steps"),
                                    initial_epoch=epoch)


class FitChecks:
    """The checks of `fit` / `evaluate` / `predict` for `ContrastiveModel`
    (which owns `_input_rank` and `on_fit_begin`)."""

    def _check_input_rank(self, x, y=None):
        # Keras retraces its step with a relaxed (unknown-rank) signature when
        # the rank of the images or of the labels changes, and the model picks
        # its path from the ranks: start new step functions instead.
        ranks = _input_rank(x, y)
        if ranks is None:
            return
        image, labels = ranks[0], ranks[1:]
        known = getattr(self, "_label_ranks", None)
        if (self._input_rank is not None and image != self._input_rank) or (
                labels and known and labels != known):
            self.train_function = self.test_function = self.predict_function = None
        self._input_rank = image
        if labels:
            self._label_ranks = labels

    def _split_evenly(self, x, y, kwargs, training):
        """Under several replicas every global batch must split evenly (the
        loss contrasts against the global batch). Datasets must say so
        statically (`distribute.check_dataset`). Arrays whose last batch is
        uneven: `fit` drops the remainder with a warning (in whole batches,
        reshuffled each epoch when `shuffle`); `evaluate` raises, as dropping
        would change the result. Returns `(x, y)` to pass on."""
        replicas = self.distribute_strategy.num_replicas_in_sync
        if isinstance(x, tf.data.Dataset):
            check_dataset(x, self.distribute_strategy)
            return x, y
        if replicas == 1 or x is None or not hasattr(x, "shape"):
            return x, y
        batch_size = kwargs.get("batch_size") or 32
        if batch_size % replicas:
            raise ValueError(
                f"With {replicas} replicas `batch_size` must be divisible by {replicas} "
                f"(each replica takes an equal share). Received: batch_size={batch_size}")
        n = int(x.shape[0])
        if n % batch_size == 0:
            return x, y
        if not training:
            raise ValueError(
                f"With {replicas} replicas every batch must split evenly, but {n} samples "
                f"leave a last batch of {n % batch_size} at batch_size={batch_size}. Pass a "
                "number of samples divisible by `batch_size`, or a dataset batched with "
                "`drop_remainder=True`.")
        if n < batch_size:
            raise ValueError(f"`batch_size` ({batch_size}) is larger than the {n} samples.")
        warnings.warn(
            f"{n % batch_size} of {n} samples are left out of each epoch: with {replicas} "
            f"replicas every batch must hold {batch_size} samples. Pass a dataset batched "
            "with `drop_remainder=True` to choose yourself.", stacklevel=3)
        return _without_remainder(x, y, kwargs, batch_size)

    def _drop_small_batches(self, x, y, kwargs):
        """For a method whose loss needs `min_batch` > 1 samples (a statistic
        of the batch): arrays whose last batch would be smaller lose it, and
        a dataset without a static batch size skips such batches; both with a
        warning. Returns `(x, y)` to pass on."""
        need = getattr(self, "min_batch", 1)
        name = type(self).__name__
        if getattr(self, "full_batches_only", False) and x is not None:
            return self._full_batches(x, y, kwargs)
        if need <= 1 or x is None:
            return x, y
        if isinstance(x, tf.data.Dataset):
            first = tf.nest.flatten(x.element_spec)[0]
            static = first.shape[0] if first.shape.rank else None
            if static is not None:
                if static < need:
                    raise ValueError(f"{name} needs batches of at least {need} samples. "
                                     f"Received: a dataset of batches of {static}")
                return x, y
            warnings.warn(
                f"{name}'s loss needs at least {need} samples per batch and this dataset's "
                f"batch size is not fixed: batches of fewer than {need} are skipped. Batch "
                "with `drop_remainder=True` to choose yourself.", stacklevel=3)

            def big_enough(*element):
                return tf.shape(tf.nest.flatten(element)[0])[0] >= need

            return x.filter(big_enough), y
        if not hasattr(x, "shape"):
            return x, y
        if int(x.shape[0]) < need:
            raise ValueError(f"{name} needs at least {need} samples. Received: {x.shape[0]}")
        return _drop_array_remainder(x, y, kwargs, lambda rest, n, b: 0 < rest < need,
                                     f"{name}'s loss needs at least {need} samples per batch")

    def _full_batches(self, x, y, kwargs):
        """Whole batches only (MoCo's shuffle-BN groups; a partial last
        batch of uneven groups can crash TensorFlow 2.21's oneDNN kernels):
        arrays lose their remainder, a dataset without a static batch size
        keeps the batches of its first batch's size; both with a warning."""
        name = type(self).__name__
        if isinstance(x, tf.data.Dataset):
            first = tf.nest.flatten(x.element_spec)[0]
            if not first.shape.rank or first.shape[0] is not None:
                return x, y
            size = int(tf.shape(tf.nest.flatten(next(iter(x)))[0])[0])
            warnings.warn(
                f"{name} trains on whole batches (shuffle-BN groups) and this dataset's "
                f"batch size is not fixed: batches of other sizes than its first ({size}) "
                "are skipped. Batch with `drop_remainder=True` to choose yourself.",
                stacklevel=3)

            def whole(*element):
                return tf.equal(tf.shape(tf.nest.flatten(element)[0])[0], size)

            return x.filter(whole), y
        if not hasattr(x, "shape"):
            return x, y
        return _drop_array_remainder(x, y, kwargs, lambda rest, n, b: rest and n > b,
                                     f"{name} trains on whole batches (shuffle-BN groups)")

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`. Under a strategy with several replicas, first
        checks that a `tf.data.Dataset` input has a static global batch size
        divisible by the number of replicas (`distribute.check_dataset`), and
        for arrays drops an uneven last batch with a warning."""
        x, y = self._split_evenly(x, y, kwargs, training=True)
        x, y = self._drop_small_batches(x, y, kwargs)
        quiet_dataset_shuffle(x, kwargs)
        self._check_input_rank(x, y)
        if self.built and getattr(self, "optimizer", None) is not None and not self.optimizer.built:
            # For every trainable variable, also those without a gradient in
            # the first step (the probe's, when the first fit has no labels).
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        callbacks = list(kwargs.pop("callbacks", None) or []) + [_FitLength()]
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate`, with the checks of `fit` (an uneven last
        batch under several replicas is an error here)."""
        x, y = self._split_evenly(x, y, kwargs, training=False)
        self._check_input_rank(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_input_rank(x)
        return super().predict(x, *args, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 builds the model's state from one batch before training; under
        # MultiWorkerMirroredStrategy it first reduces that batch across workers
        # eagerly, which fails ("Attempt to convert a value (PerReplica...) to a
        # Tensor"; keras-team/keras#20585, tensorflow/tensorflow#72388). Give it
        # this replica's slice of the batch instead: only its shapes are used.
        strategy = self.distribute_strategy
        if iterator is not None and data_batch is None and is_multi_worker(strategy):
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: (strategy.experimental_local_results(v)[0]
                               if isinstance(v, tf.distribute.DistributedValues) else v),
                    next(it))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy Keras 3 builds the compiled loss before training by
        # calling it on `model(x)`: for images that is `[batch, dim]` (one
        # embedding per image), which losses of two views (MoCo's, Barlow
        # Twins', VICReg's) reject. The step feeds the loss the views'
        # projections: build it from the views' shape, `[batch, views, H, W, C]`
        # (the model's `call` on views returns their projections).
        if data_batch is not None and getattr(self, "loss", None) is not None:
            data_batch = _with_views(data_batch, self.multi_view is not None and self.views)
        return super()._symbolic_build(iterator=iterator, data_batch=data_batch)


def _with_views(data_batch, views):
    """`data_batch` with its images `[batch, H, W, C]` (alone or under
    `"image"`) replaced by a symbolic `[batch, views, H, W, C]`; unchanged when
    `views` is falsy or the images are views already."""
    if not views:
        return data_batch
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data_batch)
    images = x["image"] if isinstance(x, dict) else x
    if images is None or len(images.shape) != 4:
        return data_batch
    shape = tuple(images.shape)
    symbolic = keras.KerasTensor((shape[0], views) + shape[1:], dtype="float32")
    x = {**x, "image": symbolic} if isinstance(x, dict) else symbolic
    return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
