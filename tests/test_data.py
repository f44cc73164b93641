import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from supcon_tf import data



def _write_idx(path, array, compress=True):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path + ".gz", "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)


def _fake_idx_dir(directory, n_train=12, n_test=5, compress=True):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte"), images, compress)
        _write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte"), labels, compress)
        arrays[split] = (images, labels)
    return arrays


def test_real_fashion_mnist_from_debian_package():
    train = data.load("fashion_mnist", "train")
    test = data.load("fashion_mnist", "test")
    assert train.element_spec == (tf.TensorSpec((28, 28, 1), tf.uint8),
                                  tf.TensorSpec((), tf.int64))
    assert int(train.cardinality()) == 60000 and int(test.cardinality()) == 10000
    labels = np.concatenate([y.numpy() for _, y in test.batch(5000)])
    assert labels.min() == 0 and labels.max() == 9
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)
    image, _ = next(iter(test))
    assert 0 < int(tf.reduce_max(image)) <= 255


def test_split_slices():
    full_images, full_labels = data.load_idx_arrays("fashion_mnist", "test")
    sliced = list(data.load("fashion_mnist", "test[10:20]").batch(100))[0]
    np.testing.assert_array_equal(sliced[1].numpy(), full_labels[10:20])
    np.testing.assert_array_equal(sliced[0].numpy(), full_images[10:20])
    assert int(data.load("fashion_mnist", "train[:10%]").cardinality()) == 6000
    assert int(data.load("fashion_mnist", "train[-100:]").cardinality()) == 100


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_under_data_dir(tmp_path, compress):
    arrays = _fake_idx_dir(str(tmp_path), compress=compress)
    images, labels = data.load_idx_arrays("mnist", "train", data_dir=str(tmp_path))
    np.testing.assert_array_equal(images[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(labels, arrays["train"][1])
    ds = data.load("mnist", "test", data_dir=str(tmp_path), download=False)
    got = list(ds.batch(100))[0]
    np.testing.assert_array_equal(got[0].numpy()[..., 0], arrays["t10k"][0])
    assert got[1].dtype == tf.int64


def test_corrupt_idx_file_raises(tmp_path):
    _fake_idx_dir(str(tmp_path))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.load_idx_arrays("mnist", "train", data_dir=str(tmp_path))


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir") as info:
        data.load("mnist", "train", data_dir=str(tmp_path), download=False)
    assert "tensorflow-datasets" in str(info.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split='validation'"):
        data.load_idx_arrays("fashion_mnist", "validation")
    with pytest.raises(ValueError, match="name=''"):
        data.load("", "train")
    with pytest.raises(ValueError, match="split=None"):
        data.load("fashion_mnist", None)
