"""Datasets as `tf.data.Dataset`s of `(image uint8 [H, W, C], label int64)`.

`load` uses tensorflow-datasets when the dataset can be had that way (already
prepared in the TFDS data directory, or downloadable), and for the MNIST-style
datasets falls back to their IDX files: Debian's package `dataset-fashion-mnist`
(/usr/share/datasets/fashion-mnist) or the files under `data_dir`.
"""

import difflib
import gzip
import os
import re
import zlib

import numpy as np
import tensorflow as tf

#: Where Debian's packages put the IDX files (`apt-get install dataset-fashion-mnist`).
SYSTEM_IDX_DIRS = {
    "fashion_mnist": "/usr/share/datasets/fashion-mnist",
    "mnist": "/usr/share/datasets/mnist",
}

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DATASETS = ("fashion_mnist", "mnist")
_SPLIT_RE = re.compile(r"^(train|test)(?:\[(-?\d*%?):(-?\d*%?)\])?$")


def _read_idx(path):
    """Reads one IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{path} is truncated or corrupt ({type(err).__name__}: {err}); "
                         "download or install it again.") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: header says {tuple(dims)} "
            f"({expected} bytes), found {len(raw) - offset} bytes of data.")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def _idx_dirs(name, data_dir):
    dirs = []
    if data_dir is not None:
        dirs += [data_dir, os.path.join(data_dir, name)]
    if name in SYSTEM_IDX_DIRS:
        dirs.append(SYSTEM_IDX_DIRS[name])
    return dirs


def _parse_split(split):
    match = _SPLIT_RE.match(split.replace(" ", ""))
    if not match:
        raise ValueError(
            "`split` must be 'train' or 'test', optionally sliced like "
            f"'train[:1000]' or 'test[10%:20%]'. Received: split={split!r}")
    return match.group(1), match.group(2), match.group(3)


def _slice_bound(text, n):
    if not text:
        return None
    if text.endswith("%"):
        return int(round(n * int(text[:-1]) / 100))
    return int(text)


def load_idx_arrays(name, split, data_dir=None):
    """Loads an MNIST-style dataset from IDX files as numpy arrays.

    Args:
        name: `"fashion_mnist"` or `"mnist"`.
        split: `"train"` or `"test"`, optionally sliced (`"train[:1000]"`,
            `"test[50%:]"`).
        data_dir: Optional directory holding the four IDX files (gzipped or
            not), directly or in a `name` sub-folder. Defaults to None: only
            the system directory of Debian's package is searched.

    Returns:
        `(images uint8 [n, 28, 28, 1], labels int64 [n])`, or None when no
        directory holds the files.
    """
    base, start, stop = _parse_split(split)
    image_stem, label_stem = _IDX_FILES[base]
    for directory in _idx_dirs(name, data_dir):
        images_path = _find_idx(directory, image_stem)
        labels_path = _find_idx(directory, label_stem)
        if images_path and labels_path:
            images = _read_idx(images_path)
            labels = _read_idx(labels_path).astype(np.int64)
            if images.shape[0] != labels.shape[0]:
                raise ValueError(
                    f"{images_path} holds {images.shape[0]} images but "
                    f"{labels_path} holds {labels.shape[0]} labels.")
            n = images.shape[0]
            sl = slice(_slice_bound(start, n), _slice_bound(stop, n))
            if not len(range(n)[sl]):
                raise ValueError(
                    f"`split` selects no example of the {n} in {base!r}: its slice is "
                    f"empty or backwards. Received: split={split!r}")
            return images[sl][..., None], labels[sl]
    return None


def _tfds_builder(name, data_dir):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception:  # noqa: BLE001 - unknown name, broken registry, ...
        return None


def _known_names():
    """The dataset names `load` can resolve: the IDX datasets and TFDS's registry."""
    names = set(_IDX_DATASETS)
    try:
        import tensorflow_datasets as tfds
        names.update(n.split("/")[0] for n in tfds.list_builders())
    except Exception:  # noqa: BLE001 - TFDS missing or broken: the IDX names only
        pass
    return names


def _check_known(name, data_dir):
    """A `ValueError` for a name neither TFDS nor the IDX path knows (unless a
    `data_dir` may hold a prepared TFDS copy of it)."""
    known = _known_names()
    if name in known or (data_dir is not None and os.path.isdir(os.path.join(data_dir, name))):
        return
    close = difflib.get_close_matches(name, sorted(known), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"Unknown dataset {name!r}: it is not one of the IDX datasets "
        f"{list(_IDX_DATASETS)} nor a tensorflow-datasets name "
        f"(tfds.list_builders()).{hint} Received: name={name!r}")


def _tfds_prepared(builder):
    try:
        return tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))
    except Exception:  # noqa: BLE001
        return False


def _from_tfds(builder, split):
    def cast(image, label):
        return tf.cast(image, tf.uint8), tf.cast(label, tf.int64)

    def cast_features(ex):
        return cast(ex["image"], ex["label"])

    if builder.info.supervised_keys is not None:
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        return ds.map(cast, num_parallel_calls=tf.data.AUTOTUNE)
    # Datasets without supervised keys (e.g. prepared locally from arrays):
    # the usual feature names.
    keys = set(builder.info.features.keys())
    if not {"image", "label"} <= keys:
        raise ValueError(f"The TFDS dataset {builder.name!r} has no supervised keys and no "
                         f"'image' and 'label' features. Received features: {sorted(keys)}")
    ds = builder.as_dataset(split=split, shuffle_files=False)
    return ds.map(cast_features, num_parallel_calls=tf.data.AUTOTUNE)


def _how_to_get(name):
    lines = [f"Could not load the dataset {name!r}."]
    if name == "fashion_mnist":
        lines.append(
            "Offline, install Debian's package: `apt-get install -y "
            "dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist), "
            "or put the four IDX files (train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            "t10k-labels-idx1-ubyte.gz) in a folder and pass it as `data_dir`.")
    elif name in _IDX_DATASETS:
        lines.append(
            "Offline, put the four IDX files (train-images-idx3-ubyte.gz, ...) "
            "in a folder and pass it as `data_dir`.")
    lines.append(
        "With network access, tensorflow-datasets downloads it: "
        f"`python -c \"import tensorflow_datasets as tfds; tfds.load('{name}')\"`.")
    return " ".join(lines)


def load(name, split, data_dir=None, download=True):
    """Loads a labelled image dataset.

    Order of sources: a TFDS copy already prepared in `data_dir` (or TFDS's
    default directory); for `"fashion_mnist"` / `"mnist"`, IDX files in
    `data_dir` or in the folder of Debian's package; finally a TFDS download
    when `download` is True.

    Args:
        name: A TFDS dataset name, e.g. `"fashion_mnist"`, `"cifar10"`.
        split: A split, e.g. `"train"`, `"test"`, `"train[:1000]"`.
        data_dir: Optional directory for TFDS data and IDX files.
            Defaults to None.
        download: Whether TFDS may download and prepare the data when no local
            copy exists. Defaults to True.

    Returns:
        A `tf.data.Dataset` of `(image uint8 [H, W, C], label int64 [])`.

    Raises:
        ValueError: an empty or unknown `name` (the message lists close
            matches), a `split` the IDX path cannot read or whose slice is
            empty or backwards, an IDX file that is truncated or corrupt.
        FileNotFoundError: a `data_dir` that is not a folder; no source has
            the data (the message says how to get it).

    Example:

    >>> ds = load("fashion_mnist", "test")  # doctest: +SKIP
    >>> image, label = next(iter(ds))        # doctest: +SKIP
    >>> image.shape, image.dtype, label.dtype  # doctest: +SKIP
    (TensorShape([28, 28, 1]), tf.uint8, tf.int64)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string. Received: name={name!r}")
    if not isinstance(split, str) or not split:
        raise ValueError(f"`split` must be a non-empty string. Received: split={split!r}")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"`data_dir` is not a folder (it would silently fall back to the system "
            f"copy). Received: data_dir={data_dir!r}")
    _check_known(name, data_dir)
    if name in _IDX_DATASETS:
        _parse_split(split)
    builder = _tfds_builder(name, data_dir)
    if builder is not None and _tfds_prepared(builder):
        return _from_tfds(builder, split)
    if name in _IDX_DATASETS:
        arrays = load_idx_arrays(name, split, data_dir)
        if arrays is not None:
            return tf.data.Dataset.from_tensor_slices(arrays)
    errors = []
    if builder is not None and download:
        try:
            builder.download_and_prepare()
            return _from_tfds(builder, split)
        except Exception as err:  # noqa: BLE001 - offline, quota, ...
            errors.append(f"(tensorflow-datasets said: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})")
    elif builder is None:
        errors.append("(tensorflow-datasets does not know this name or is not installed)")
    raise FileNotFoundError(" ".join([_how_to_get(name)] + errors))


def load_arrays(name, split, data_dir=None, download=True):
    """`load`'s dataset as NumPy arrays `(images uint8 [n, H, W, C], labels
    int64 [n])`: from IDX files directly when they are there, else through
    `load` (same sources, same errors)."""
    if name in _IDX_DATASETS and (data_dir is None or os.path.isdir(data_dir)):
        arrays = load_idx_arrays(name, split, data_dir)
        if arrays is not None:
            return arrays
    images, labels = [], []
    for image, label in load(name, split, data_dir, download).batch(4096).as_numpy_iterator():
        images.append(image)
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def num_classes(name):
    """Number of classes of a known dataset name (10 for the MNISTs)."""
    known = {"fashion_mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}
    if name not in known:
        raise ValueError(f"Unknown dataset for `num_classes`. Received: name={name!r}")
    return known[name]


def batches(dataset, batch_size, training, seed=None, shuffle_buffer=10000):
    """Batches `(image, label)` pairs for `fit`: shuffled with whole batches
    when training (contrastive losses and multi-replica steps want a fixed
    batch size), in order and keeping the last partial batch otherwise.

    Args:
        dataset: A `tf.data.Dataset`, e.g. from `load`.
        batch_size: Global batch size, >= 1.
        training: Shuffle and drop the remainder.
        seed: Shuffle seed. Defaults to None.
        shuffle_buffer: Shuffle buffer size. Defaults to 10000.

    Returns:
        The batched, prefetched `tf.data.Dataset`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"`batches` takes a tf.data.Dataset. Received: {type(dataset).__name__}")
    image = _image_spec(dataset.element_spec)
    # Elements may be images [H, W, C] or views made by the pipeline
    # [views, H, W, C] (a static number of views); a batch of images has a
    # batch axis of unknown size, or five axes.
    rank = None if image is None else image.shape.rank
    if rank is not None and (rank >= 5 or (rank == 4 and image.shape[0] is None)):
        raise ValueError(
            "`batches` takes an unbatched dataset (one image [H, W, C] per element); this "
            f"one is batched already. Received elements with image shape {image.shape}")
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=training,
                            num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _image_spec(spec):
    """The image's TensorSpec in an element `image`, `(image, label)`,
    `{"image": ...}` or `({"image": ...}, label)`; None for other shapes."""
    if isinstance(spec, tuple) and spec:
        spec = spec[0]
    if isinstance(spec, dict):
        spec = spec.get("image")
    return spec if isinstance(spec, tf.TensorSpec) else None


def with_index(dataset):
    """Each example's position in `dataset`, fed beside its image.

    `(image, label)` becomes `({"image": image, "index": i}, label)` and an
    image alone becomes `{"image": image, "index": i}`, with `i` (int64) the
    example's position in `dataset` as given: call it before shuffling, and
    the index stays with its image through shuffle, batching and
    `tf.distribute` (it is part of the example). Models with a memory of the
    dataset (`supcon_tf.models.NPIDModel`) read `x["index"]`.

    Args:
        dataset: A `tf.data.Dataset` of `(image, label)` pairs or of images.

    Returns:
        The dataset with indices.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"`with_index` takes a tf.data.Dataset. Received: {type(dataset).__name__}")
    spec = dataset.element_spec
    pair = isinstance(spec, tuple) and len(spec) == 2
    image = spec[0] if pair else spec
    if not isinstance(image, tf.TensorSpec):
        raise ValueError("`with_index` takes a dataset of (image, label) pairs or of images. "
                         f"Received elements of {spec}")
    if image.shape.rank is not None and image.shape.rank >= 4:
        # A batched dataset would number batches, not examples, and a later
        # `.batch()` would nest batches: fit then trains on nothing.
        raise ValueError(
            "`with_index` numbers examples, so it takes an unbatched dataset (one image "
            "[H, W, C] per element); call it before `.batch()` / `supcon_tf.data.batches`. "
            f"Received elements with image shape {image.shape}")
    return dataset.enumerate().map(_indexed_pair if pair else _indexed_image)


def _indexed_pair(i, xy):
    return {"image": xy[0], "index": i}, xy[1]


def _indexed_image(i, x):
    return {"image": x, "index": i}


# Few-label and long-tailed subsets live in their own module; they are part of this one's API.
from supcon_tf.subsets import (class_balanced, few_labels, long_tailed,  # noqa: E402,F401
                               long_tailed_counts)


ROTATIONS = 4


def rotation_task(dataset):
    """An augmentation-sensitive task from a dataset of square images: image
    `i` (in the order given) turned counter-clockwise by `i mod 4` quarter
    turns, labelled with the number of turns (4 classes; the class label is
    dropped). Deterministic: the same set every time, each turn on a quarter
    of the images. What it measures: whether a representation keeps an
    image's orientation, which a contrastive space invariant to rotation
    discards (LooC, `supcon_tf.models.LooCModel`). Fashion-MNIST's garments
    are photographed upright, so the turn is recoverable from the image.

    Args:
        dataset: A `tf.data.Dataset` of `(image, label)` pairs, images
            `[H, H, C]`.

    Returns:
        A dataset of `(turned image, turns)` pairs, turns int64 in 0..3.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError("`rotation_task` takes a tf.data.Dataset. "
                        f"Received: {type(dataset).__name__}")
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and spec[0].shape.rank == 3
            and spec[0].shape[0] == spec[0].shape[1]):
        raise ValueError("`rotation_task` takes (image, label) pairs of square images "
                         f"[H, H, C]. Received: element_spec={spec}")
    from supcon_tf.augment import rotate90

    def turn(index, pair):
        image, _ = pair
        turns = tf.math.floormod(index, ROTATIONS)
        return rotate90(image[None], turns[None])[0], turns

    return dataset.enumerate().map(turn, num_parallel_calls=tf.data.AUTOTUNE)
