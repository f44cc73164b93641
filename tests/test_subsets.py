"""Few-label and long-tailed subsets (supcon_tf.data) and the long-tail accuracy
split (supcon_tf.evaluation)."""

import numpy as np
import pytest
import tensorflow as tf

from supcon_tf import data, evaluation


def _arrays(per_class=(30, 30, 30), seed=0):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    labels = np.random.default_rng(seed).permutation(labels).astype(np.int64)
    images = np.arange(len(labels) * 4, dtype=np.int32).reshape(len(labels), 2, 2, 1)
    return images, labels


def _dataset(images, labels):
    return tf.data.Dataset.from_tensor_slices((images, labels))


def test_few_labels_sizes_balance_order_and_determinism_on_arrays():
    images, labels = _arrays((40, 50, 60))
    (x, y), rest = data.few_labels((images, labels), per_class=7, seed=3)
    assert np.bincount(y).tolist() == [7, 7, 7]
    assert len(rest) == len(labels) - 21
    # Labelled and rest partition the input, each in the input's order.
    index = {img.tobytes(): i for i, img in enumerate(images)}
    picked = [index[img.tobytes()] for img in x]
    others = [index[img.tobytes()] for img in rest]
    assert picked == sorted(picked) and others == sorted(others)
    assert sorted(picked + others) == list(range(len(labels)))
    np.testing.assert_array_equal(labels[picked], y)
    # The same seed gives the same split; another seed another one.
    (x2, _), _ = data.few_labels((images, labels), per_class=7, seed=3)
    (x3, _), _ = data.few_labels((images, labels), per_class=7, seed=4)
    np.testing.assert_array_equal(x, x2)
    assert not np.array_equal(x, x3)
    # fraction: about that share, equal per class.
    (_, y), _ = data.few_labels((images, labels), fraction=0.1)
    assert np.bincount(y).tolist() == [5, 5, 5]


def test_few_labels_on_a_dataset_matches_the_arrays():
    images, labels = _arrays()
    labelled, unlabelled = data.few_labels(_dataset(images, labels), fraction=0.2, seed=1)
    (x, y), rest = data.few_labels((images, labels), fraction=0.2, seed=1)
    got = list(labelled.as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([g[0] for g in got]), x)
    np.testing.assert_array_equal([g[1] for g in got], y)
    # The unlabelled part is images alone.
    assert unlabelled.element_spec.shape == (2, 2, 1)
    np.testing.assert_array_equal(np.stack(list(unlabelled.as_numpy_iterator())), rest)


def test_few_labels_on_fashion_mnist_one_percent():
    train = data.load("fashion_mnist", "train")
    labelled, unlabelled = data.few_labels(train, fraction=0.01, seed=0)
    y = np.concatenate(list(labelled.map(lambda x, y: y).batch(8192).as_numpy_iterator()))
    assert np.bincount(y).tolist() == [60] * 10
    assert int(unlabelled.cardinality()) == 60000 - 600


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one of"),
    ({"fraction": 0.1, "per_class": 3}, "exactly one of"),
    ({"fraction": 0.0}, "fraction"),
    ({"fraction": 1.5}, "fraction"),
    ({"fraction": True}, "fraction"),
    ({"per_class": 0}, "per_class"),
    ({"per_class": 2.5}, "per_class"),
    ({"per_class": 31}, "class 0 has 30 examples"),
])
def test_few_labels_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.few_labels(_arrays(), **kwargs)


def test_subsets_reject_what_is_not_labelled_data():
    images, labels = _arrays()
    with pytest.raises(TypeError, match="integer class ids"):
        data.few_labels((images, labels.astype(np.float32)), per_class=1)
    with pytest.raises(TypeError, match="integer class ids"):
        data.long_tailed(_dataset(images, np.eye(3)[labels]))
    with pytest.raises(ValueError, match="pairs"):
        data.long_tailed(tf.data.Dataset.from_tensor_slices(images))
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        data.few_labels(images, per_class=1)
    with pytest.raises(ValueError, match="differ in length"):
        data.long_tailed((images[:5], labels))


def test_long_tailed_counts_follow_the_profiles():
    # The long-tailed CIFAR-10 benchmark's counts (ratio 100, n_max 5000).
    assert data.long_tailed_counts(5000, 10, 100) == [
        5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert data.long_tailed_counts(6000, 10, 10, "step") == [6000] * 5 + [600] * 5
    assert data.long_tailed_counts(6000, 10, 1) == [6000] * 10
    for args, match in [((0, 10), "n_max"), ((10, 1), "num_classes"),
                        ((10, 10, 0.5), "imbalance_ratio"), ((10, 10, 100, "linear"), "profile"),
                        ((10, 10, 1000), "no samples")]:
        with pytest.raises(ValueError, match=match):
            data.long_tailed_counts(*args)


def test_long_tailed_fashion_mnist_follows_the_profile_exactly():
    train = data.load("fashion_mnist", "train")
    subset = data.long_tailed(train, imbalance_ratio=100, seed=0)
    y = np.concatenate(list(subset.map(lambda x, y: y).batch(8192).as_numpy_iterator()))
    expected = [int(6000 * 0.01 ** (c / 9)) for c in range(10)]
    assert np.bincount(y).tolist() == expected
    assert expected[0] == 6000 and expected[-1] == 60
    # Deterministic for a seed, and the images come with their own labels.
    again = data.long_tailed(train, imbalance_ratio=100, seed=0)
    first = next(iter(subset.batch(64)))
    np.testing.assert_array_equal(first[0], next(iter(again.batch(64)))[0])


def test_long_tailed_arrays_and_step_profile():
    images, labels = _arrays((30, 30, 30, 30))
    x, y = data.long_tailed((images, labels), imbalance_ratio=10, profile="step", seed=2)
    assert np.bincount(y).tolist() == [30, 30, 3, 3]
    with pytest.raises(ValueError, match="class 1 has 10 examples"):
        data.long_tailed(_arrays((30, 10, 30)), imbalance_ratio=2, n_max=30)
    # By default n_max is the largest every class can supply: class 1's 10
    # examples allow int(n * 0.5 ** 0.5) <= 10 up to n = 15.
    _, y = data.long_tailed(_arrays((30, 10, 30)), imbalance_ratio=2)
    assert np.bincount(y).tolist() == data.long_tailed_counts(15, 3, 2) == [15, 10, 7]
    (_, y), counts = data.long_tailed(_arrays((30, 10, 30)), imbalance_ratio=2,
                                      return_counts=True)
    assert counts == np.bincount(y).tolist() == [15, 10, 7]


def test_class_balanced_draws_every_class_equally_from_a_long_tail():
    images, labels = _arrays((200, 40, 8))
    ds = _dataset(images, labels)
    stream = data.class_balanced(ds, seed=3)
    drawn = list(stream.take(3000).as_numpy_iterator())
    got = np.array([y for _, y in drawn])
    # Uniform over the 3 classes: 1000 each, binomial sd ~26.
    assert np.all(np.abs(np.bincount(got) - 1000) < 110), np.bincount(got)
    # Every draw is an example of the data, with its own label; the rare class
    # cycles through all its 8 examples.
    index = {img.tobytes(): y for img, y in zip(images, labels)}
    assert all(index[x.tobytes()] == y for x, y in drawn)
    rare = {x.tobytes() for x, y in drawn if y == 2}
    assert len(rare) == 8
    again = [y for _, y in data.class_balanced(ds, seed=3).take(50).as_numpy_iterator()]
    assert again == got[:50].tolist()                        # deterministic for a seed
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        data.class_balanced((images, labels))
    with pytest.raises(ValueError, match="at least 2 classes"):
        data.class_balanced(_dataset(images[:3], np.zeros(3, np.int64)))


def test_per_class_and_shot_accuracy():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    preds = np.array([0, 1, 1, 1, 0, 2, 0, 0])
    acc = evaluation.per_class_accuracy(labels, preds, num_classes=5)
    np.testing.assert_allclose(acc[:4], [0.5, 2 / 3, 0.5, 0.0])
    assert np.isnan(acc[4])
    # Scores are argmaxed.
    np.testing.assert_allclose(evaluation.per_class_accuracy(labels, np.eye(4)[preds]), acc[:4])
    counts = [500, 150, 50, 10]
    out = evaluation.shot_accuracy(labels, preds, counts, thresholds=(100, 20))
    assert out["groups"] == {"many": [0, 1], "medium": [2], "few": [3]}
    assert out["many"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert out["medium"] == pytest.approx(0.5) and out["few"] == 0.0
    assert out["overall"] == pytest.approx(4 / 8)
    # Default thresholds: 100 and 20 scaled to the largest class (ImageNet-LT's 1280).
    assert evaluation.shot_thresholds([6000, 60]) == pytest.approx((468.75, 93.75))
    assert evaluation.shot_thresholds([1280, 5]) == pytest.approx((100, 20))
    with pytest.raises(ValueError, match="few <= many"):
        evaluation.shot_accuracy(labels, preds, counts, thresholds=(10, 20))
    with pytest.raises(ValueError, match="same length"):
        evaluation.per_class_accuracy(labels, preds[:3])
    with pytest.raises(ValueError, match="train_counts"):
        evaluation.shot_thresholds([])


def test_a_dataset_without_a_fixed_order_is_refused_with_its_cause():
    images, labels = _arrays()
    shuffled = _dataset(images, labels).shuffle(len(labels))      # reshuffles every pass
    with pytest.raises(ValueError, match="no fixed order"):
        data.few_labels(shuffled, per_class=5)
    with pytest.raises(ValueError, match="no fixed order"):
        data.long_tailed(shuffled, imbalance_ratio=3)
    # A shuffle with a fixed order is a fixed order: correct counts, and the
    # labelled and unlabelled parts do not overlap.
    fixed = _dataset(images, labels).shuffle(len(labels), seed=2, reshuffle_each_iteration=False)
    labelled, unlabelled = data.few_labels(fixed, per_class=5)
    got = list(labelled.as_numpy_iterator())
    assert np.bincount([g[1] for g in got]).tolist() == [5, 5, 5]
    picked = {g[0].tobytes() for g in got}
    rest = {x.tobytes() for x in unlabelled.as_numpy_iterator()}
    assert not picked & rest and len(picked | rest) == len(labels)
    subset = data.long_tailed(fixed, imbalance_ratio=3)
    assert np.bincount([y for _, y in subset.as_numpy_iterator()]).tolist() == [30, 17, 10]
    # class_balanced only filters by label: any order is fine.
    stream = data.class_balanced(shuffled)
    assert len(list(stream.take(6).as_numpy_iterator())) == 6


def test_subsets_make_no_autograph_warnings(caplog):
    images, labels = _arrays()
    with caplog.at_level("WARNING"):
        labelled, unlabelled = data.few_labels(_dataset(images, labels), per_class=3)
        list(unlabelled.as_numpy_iterator())
        list(data.long_tailed(_dataset(images, labels), imbalance_ratio=3).as_numpy_iterator())
        data.with_index(_dataset(images, labels))
    assert not [r for r in caplog.records if "could not transform" in r.getMessage()]


def test_with_index_and_batches_refuse_batched_input():
    images, labels = _arrays()
    batched = _dataset(images, labels).batch(8)
    with pytest.raises(ValueError, match=r"before `.batch\(\)`.*\(None, 2, 2, 1\)"):
        data.with_index(batched)
    with pytest.raises(ValueError, match="batched already"):
        data.batches(batched, 4, training=True)
    with pytest.raises(ValueError, match="batched already"):
        data.batches(batched.map(lambda x, y: ({"image": x, "index": y}, y)), 4, training=True)
    # Views made by the pipeline ([views, H, W, C] per element) are not batches.
    views = tf.data.Dataset.from_tensor_slices(np.zeros((6, 2, 2, 2, 1), "float32"))
    assert data.batches(views, 2, training=True).element_spec.shape == (2, 2, 2, 2, 1)
    indexed = data.batches(data.with_index(_dataset(images, labels)), 8, training=False)
    assert sum(1 for _ in indexed) == 12
