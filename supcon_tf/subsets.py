"""Few-label and long-tailed subsets of a labelled dataset (also in `supcon_tf.data`).

`few_labels` splits a dataset into a class-balanced labelled subset and the
unlabelled rest (SimCLR v2's 1% / 10% settings); `long_tailed` keeps a number
of samples per class that falls off exponentially (or in one step) from the
largest class, as the long-tailed CIFAR benchmarks do (Cao et al., NeurIPS
2019; Kang et al., ICLR 2021). Both are deterministic for a seed, keep the
dataset's order, and take either a `tf.data.Dataset` of `(image, label)` pairs
(e.g. from `supcon_tf.data.load`) or a pair of arrays `(images, labels)`; they
return the same kind. `class_balanced` streams a dataset with every class
drawn equally often (the class-balanced sampling of a decoupled classifier).
"""

import numpy as np
import tensorflow as tf


def _labels_of(data, fn, fixed_order=True):
    """The labels and a function `take(indices)` for a dataset or arrays.
    With `fixed_order`, a dataset whose order differs between two passes is
    refused (the subsets are taken by position in later passes)."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(f"`{fn}` needs a dataset of (image, label) pairs. Received "
                             f"a dataset with element_spec={spec}")
        if spec[1].shape.rank not in (0, None) or not spec[1].dtype.is_integer:
            raise TypeError(f"`{fn}` needs integer class ids as labels (a scalar per "
                            f"example). Received labels of {spec[1]}")
        labels, prints = _read_labels(data)
        if not fixed_order:
            return labels, None
        again, prints_again = _read_labels(data)
        if not (np.array_equal(labels, again) and np.array_equal(prints, prints_again)):
            raise ValueError(
                f"`{fn}` reads the dataset more than once (its labels, then each "
                "subset) and needs the same elements in the same order every time, "
                "but two passes over this dataset gave different orders: it has no "
                "fixed order (e.g. `.shuffle()` with reshuffle_each_iteration, or "
                "non-deterministic parallel reads). Call it on the dataset before "
                "shuffling and shuffle the subsets it returns.")
        expected = tf.constant(labels)

        def take(indices):
            keep = np.zeros(len(labels), bool)
            keep[indices] = True
            keep = tf.constant(keep)

            def kept(i, xy):
                # A dataset whose order changed after the check would mix the
                # subsets: fail loudly instead.
                check = tf.debugging.assert_equal(
                    tf.cast(xy[1], tf.int64), expected[i],
                    message=f"`{fn}`: the dataset's order changed between passes")
                with tf.control_dependencies([check]):
                    return tf.identity(keep[i])

            def element(i, xy):
                return xy

            subset = data.enumerate().filter(kept).map(element)
            # Known length: `cardinality()` gives steps per epoch to the examples.
            return subset.apply(tf.data.experimental.assert_cardinality(len(indices)))

        return labels, take
    try:
        images, labels = data
    except (TypeError, ValueError):
        raise TypeError(f"`{fn}` takes a tf.data.Dataset of (image, label) pairs or a "
                        f"pair of arrays (images, labels). Received: {type(data).__name__}"
                        ) from None
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"`{fn}` needs integer class ids [n] as labels. Received labels "
                        f"with shape {labels.shape} and dtype {labels.dtype}")
    if len(images) != len(labels):
        raise ValueError(f"`{fn}`: images and labels differ in length: "
                         f"{len(images)} and {len(labels)}")

    def take(indices):
        return np.asarray(images)[indices], labels[indices]

    return labels.astype(np.int64), take


def _label_and_print(x, y):
    """An element's label and a fingerprint of its image (the sum of its
    values with position weights), to tell two passes' orders apart."""
    flat = tf.reshape(tf.cast(x, tf.float64), [-1])
    weights = tf.cast(tf.range(1, tf.size(flat) + 1) % 97, tf.float64)
    return y, tf.reduce_sum(flat * weights)


def _read_labels(data):
    """One pass: the labels as int64 [n] and the images' fingerprints [n]."""
    labels, prints = [], []
    # In batches: one element at a time takes seconds for 60,000 labels.
    for y, f in data.map(_label_and_print).batch(8192).as_numpy_iterator():
        labels.append(np.reshape(y, [-1]))
        prints.append(np.reshape(f, [-1]))
    if not labels:
        return np.zeros([0], np.int64), np.zeros([0])
    return np.concatenate(labels).astype(np.int64), np.concatenate(prints)


def _images_only(x, y):
    return x


def _classes(labels, fn):
    if len(labels) == 0:
        raise ValueError(f"`{fn}` got an empty dataset.")
    if labels.min() < 0:
        raise ValueError(f"`{fn}` needs class ids >= 0. Received a label {labels.min()}")
    return np.arange(labels.max() + 1)


def few_labels(data, fraction=None, per_class=None, seed=0):
    """A class-balanced labelled subset and the unlabelled rest.

    Every class gets the same number of labelled examples: `per_class`, or
    `round(fraction * n / num_classes)` (at least 1), so that about `fraction`
    of the dataset is labelled (SimCLR v2's 1% and 10% of ImageNet are
    class-balanced in the same way). Which examples of a class are labelled is
    drawn with `seed`; the same seed gives the same split.

    Args:
        data: A `tf.data.Dataset` of `(image, label)` pairs with integer labels
            (e.g. `supcon_tf.data.load("fashion_mnist", "train")`), or a pair of
            arrays `(images, labels)`.
        fraction: Share of the dataset to label, in (0, 1]. Give this or
            `per_class`.
        per_class: Labelled examples per class, an integer >= 1.
        seed: Seed of the draw. Defaults to 0.

    A dataset is read several times (its labels, then each subset by
    position), so it must give its elements in the same order every time:
    split before `.shuffle()`, then shuffle the subsets. A dataset whose
    order changes between passes raises a `ValueError`.

    Returns:
        `(labelled, unlabelled)`: for a dataset, a dataset of `(image, label)`
        pairs and a dataset of images alone (the rest, labels dropped); for
        arrays, `(images, labels)` and the rest's images. Both keep the input's
        order. Every class with fewer examples than asked raises an error.

    Example:

    >>> train = supcon_tf.data.load("fashion_mnist", "train")  # doctest: +SKIP
    >>> labelled, unlabelled = few_labels(train, fraction=0.01)  # 60 per class
    """
    if (fraction is None) == (per_class is None):
        raise ValueError("`few_labels` takes exactly one of `fraction` and `per_class`. "
                         f"Received: fraction={fraction!r}, per_class={per_class!r}")
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(
            fraction, (int, float, np.number)) or not 0 < fraction <= 1):
        raise ValueError(f"`fraction` must be a number in (0, 1]. Received: fraction={fraction!r}")
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(
            per_class, (int, np.integer)) or per_class < 1):
        raise ValueError(f"`per_class` must be an integer >= 1. Received: per_class={per_class!r}")
    labels, take = _labels_of(data, "few_labels")
    classes = _classes(labels, "few_labels")
    if per_class is None:
        per_class = max(1, int(round(fraction * len(labels) / len(classes))))
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(f"`few_labels`: class {c} has {len(members)} examples, fewer than "
                             f"the {per_class} per class asked (fraction={fraction!r}, "
                             f"per_class={per_class!r}).")
        chosen.append(rng.permutation(members)[:per_class])
    labelled = np.sort(np.concatenate(chosen))
    rest = np.setdiff1d(np.arange(len(labels)), labelled)
    if isinstance(data, tf.data.Dataset):
        return take(labelled), take(rest).map(_images_only)
    return take(labelled), take(rest)[0]


def long_tailed_counts(n_max, num_classes, imbalance_ratio=100, profile="exponential"):
    """Samples per class of a long-tailed subset, class 0 the largest.

    `"exponential"`: class c keeps `int(n_max * (1 / ratio) ** (c / (C - 1)))`
    (the long-tailed CIFAR benchmarks' formula and rounding, so the last class
    keeps `n_max / ratio`); `"step"`: the first `C // 2` classes keep `n_max`, the
    others `int(n_max / ratio)`.

    Args:
        n_max: Samples of the largest class, >= 1.
        num_classes: Number of classes, >= 2.
        imbalance_ratio: Largest over smallest class, >= 1. Defaults to 100.
        profile: `"exponential"` or `"step"`. Defaults to `"exponential"`.

    Returns:
        A list of `num_classes` integers.
    """
    for name, value, low in (("n_max", n_max, 1), ("num_classes", num_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}. Received: {name}={value!r}")
    if isinstance(imbalance_ratio, bool) or not isinstance(
            imbalance_ratio, (int, float, np.number)) or not 1 <= imbalance_ratio < np.inf:
        raise ValueError("`imbalance_ratio` must be a finite number >= 1. "
                         f"Received: imbalance_ratio={imbalance_ratio!r}")
    if profile == "exponential":
        counts = [int(n_max * (1.0 / imbalance_ratio) ** (c / (num_classes - 1.0)))
                  for c in range(num_classes)]
    elif profile == "step":
        counts = [n_max if c < num_classes // 2 else int(n_max / imbalance_ratio)
                  for c in range(num_classes)]
    else:
        raise ValueError(f"`profile` must be 'exponential' or 'step'. Received: profile={profile!r}")
    if min(counts) < 1:
        raise ValueError(f"`imbalance_ratio`={imbalance_ratio!r} leaves a class with no "
                         f"samples at n_max={n_max}.")
    return counts


def long_tailed(data, imbalance_ratio=100, profile="exponential", seed=0, n_max=None,
                return_counts=False):
    """A long-tailed subset: class c keeps `long_tailed_counts(n_max, ...)[c]` examples.

    Class 0 keeps the most (`n_max`), the last class `n_max / imbalance_ratio`.
    By default `n_max` is the largest the classes of `data` can supply: on a
    balanced dataset the size of a class (6000 for Fashion-MNIST), otherwise
    the largest value for which no class runs short. Which examples a class
    keeps is drawn with `seed`. Evaluate on the balanced test set, with
    `supcon_tf.evaluation.shot_accuracy` for the many/medium/few-shot split.

    Args:
        data: A `tf.data.Dataset` of `(image, label)` pairs with integer labels,
            or a pair of arrays `(images, labels)`.
        imbalance_ratio: Largest over smallest class, >= 1. Defaults to 100.
        profile: `"exponential"` (the default) or `"step"`; see
            `long_tailed_counts`.
        seed: Seed of the draw. Defaults to 0.
        n_max: Examples of class 0, or None for the largest possible.
            Defaults to None.
        return_counts: Also return the list of examples kept per class.
            Defaults to False.

    A dataset must give its elements in the same order on every pass (as
    for `few_labels`); one that does not raises a `ValueError`.

    Returns:
        The subset, of the same kind as `data`, in the input's order. With an
        `n_max` that a class cannot supply, an error (the counts follow the
        profile exactly or not at all).
    """
    labels, take = _labels_of(data, "long_tailed")
    classes = _classes(labels, "long_tailed")
    available = np.bincount(labels, minlength=len(classes))
    if len(classes) < 2:
        raise ValueError(f"`long_tailed` needs at least 2 classes. Received labels of "
                         f"{len(classes)} class.")
    if n_max is None:
        # The largest n_max whose count for every class is available.
        shares = np.array(long_tailed_counts(10 ** 9, len(classes), imbalance_ratio, profile),
                          dtype=np.float64) / 10 ** 9
        # int(n * share) <= available  <=>  n < (available + 1) / share.
        n_max = int(np.min(np.ceil((available + 1) / shares))) - 1
        while n_max > 1 and any(
                c > a for c, a in zip(long_tailed_counts(n_max, len(classes), imbalance_ratio,
                                                         profile), available)):
            n_max -= 1
    counts = long_tailed_counts(n_max, len(classes), imbalance_ratio, profile)
    rng = np.random.default_rng(seed)
    chosen = []
    for c, n in zip(classes, counts):
        members = np.flatnonzero(labels == c)
        if len(members) < n:
            raise ValueError(f"`long_tailed`: class {c} has {len(members)} examples, fewer than "
                             f"the {n} its {profile} profile keeps (ratio {imbalance_ratio}).")
        chosen.append(rng.permutation(members)[:n])
    subset = take(np.sort(np.concatenate(chosen)))
    return (subset, counts) if return_counts else subset


def _of_class(c):
    def of_class(x, y):
        return tf.equal(tf.cast(y, tf.int64), c)
    return of_class


def class_balanced(data, seed=0):
    """An endless class-balanced stream of `data`: each example's class is
    drawn uniformly over the classes present, then an example of that class
    (each class's examples reshuffled every pass). This is the class-balanced
    sampling of the decoupled classifier stage on long-tailed data (Kang et
    al., ICLR 2020 and 2021): the linear layer sees every class equally often.

    Args:
        data: A `tf.data.Dataset` of `(image, label)` pairs with integer labels.
        seed: Seed of the class draws and the shuffles. Defaults to 0.

    Returns:
        An infinite `tf.data.Dataset` of `(image, label)` pairs; take as many
        as an epoch needs (e.g. `.batch(b).take(len(data) // b)`, or
        `steps_per_epoch` in `fit`).
    """
    if not isinstance(data, tf.data.Dataset):
        raise TypeError("`class_balanced` takes a tf.data.Dataset of (image, label) pairs. "
                        f"Received: {type(data).__name__}")
    labels, _ = _labels_of(data, "class_balanced", fixed_order=False)
    _classes(labels, "class_balanced")
    present = np.flatnonzero(np.bincount(labels))
    if len(present) < 2:
        raise ValueError("`class_balanced` needs at least 2 classes. Received labels of "
                         f"{len(present)} class.")
    streams = []
    for i, c in enumerate(present):
        members = data.filter(_of_class(int(c)))
        streams.append(members.cache().shuffle(int(np.sum(labels == c)), seed=seed + i,
                                               reshuffle_each_iteration=True).repeat())
    return tf.data.Dataset.sample_from_datasets(
        streams, weights=[1.0 / len(present)] * len(present), seed=seed)
