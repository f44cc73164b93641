"""NPID: sample indices in the data path, the memory bank, NPIDModel's losses."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf.memory import MemoryBank
from tests import tiny


def _data(n=40, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8, 1)).astype("uint8")
    return images, (np.arange(n) % classes).astype("int64")


def test_with_index_survives_shuffle_and_batching():
    images, labels = _data()
    ds = sct.data.with_index(tf.data.Dataset.from_tensor_slices((images, labels)))
    batched = sct.data.batches(ds, 8, training=True, seed=1)
    seen = []
    for x, y in batched:
        index = x["index"].numpy()
        np.testing.assert_array_equal(x["image"].numpy(), images[index])
        np.testing.assert_array_equal(y.numpy(), labels[index])
        seen += index.tolist()
    assert sorted(seen) == list(range(40)) and seen != sorted(seen)   # shuffled, all there
    alone = sct.data.with_index(tf.data.Dataset.from_tensor_slices(images))
    first = next(iter(alone.skip(3)))
    assert int(first["index"]) == 3
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        sct.data.with_index(images)
    with pytest.raises(ValueError, match="pairs or of images"):
        sct.data.with_index(tf.data.Dataset.from_tensor_slices((images, labels, labels)))


def test_memory_bank_update_matches_numpy_and_checks_indices():
    bank = MemoryBank(6, 3, momentum=0.5, seed=0)
    before = bank.read().numpy()
    np.testing.assert_allclose(np.linalg.norm(before, axis=1), 1.0, rtol=1e-5)
    f = np.random.default_rng(1).normal(size=(2, 3)).astype("float32")
    bank.update(tf.constant([4, 1]), f)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    expected = before.copy()
    for row, i in enumerate([4, 1]):
        v = 0.5 * before[i] + 0.5 * f[row]
        expected[i] = v / np.linalg.norm(v)
    np.testing.assert_allclose(bank.read().numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one slot per sample"):
        bank.update(tf.constant([6]), f[:1])
    for kwargs, match in [({"size": 0, "dim": 3}, "size"), ({"size": 3, "dim": 3, "momentum": 1},
                                                            "momentum")]:
        with pytest.raises(ValueError, match=match):
            MemoryBank(**kwargs)


def _model(loss="nce", num_negatives=5, n=12, **kwargs):
    keras.utils.set_random_seed(0)
    enc = tiny.encoder((8, 8, 1))
    return sct.models.NPIDModel(enc, n, head=sct.heads.ProjectionHead(4, kind="linear"),
                                loss=loss, num_negatives=num_negatives, temperature=0.5,
                                **kwargs)


def _loss_inputs(model, batch=3):
    rng = np.random.default_rng(2)
    f = rng.normal(size=(batch, 4)).astype("float32")
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    index = np.array([7, 0, 11])[:batch]
    x = {"image": None, "index": tf.constant(index)}
    out = {"projections": tf.constant(f[:, None])}
    bank = model.bank.read().numpy()
    return x, out, f, index, bank


def test_nce_loss_matches_a_numpy_transcription():
    model = _model("nce")
    x, out, f, index, bank = _loss_inputs(model)
    negatives = model._negatives().numpy()
    got = float(model.contrastive_loss(x, None, out, None, training=True))
    n, m, t = 12.0, 5.0, 0.5
    scores = np.concatenate([np.sum(bank[index] * f, 1, keepdims=True),
                             f @ bank[negatives].T], axis=1) / t
    z = np.mean(np.exp(scores)) * n                      # from the first batch
    p = np.exp(scores) / z
    h = p / (p + m / n)
    expected = np.mean(-np.log(h[:, 0]) - np.sum(np.log(1 - h[:, 1:]), axis=1))
    assert got == pytest.approx(expected, rel=1e-5)
    assert float(model.nce_z) == pytest.approx(z, rel=1e-5)    # kept from now on
    model.bank.update(tf.constant([3]), f[:1])
    scores2 = np.concatenate([np.sum(model.bank.read().numpy()[index] * f, 1, keepdims=True),
                              f @ model.bank.read().numpy()[negatives].T], axis=1) / t
    p2 = np.exp(scores2) / z
    h2 = p2 / (p2 + m / n)
    expected2 = np.mean(-np.log(h2[:, 0]) - np.sum(np.log(1 - h2[:, 1:]), axis=1))
    assert float(model.contrastive_loss(x, None, out, None, training=True)) == \
        pytest.approx(expected2, rel=1e-5)


@pytest.mark.parametrize("num_negatives", [None, 5])
def test_softmax_losses_match_numpy(num_negatives):
    model = _model("softmax", num_negatives)
    x, out, f, index, bank = _loss_inputs(model)
    got = float(model.contrastive_loss(x, None, out, None, training=True))
    if num_negatives is None:
        logits = f @ bank.T / 0.5
        target = index
    else:
        negatives = model._negatives().numpy()
        logits = np.concatenate([np.sum(bank[index] * f, 1, keepdims=True),
                                 f @ bank[negatives].T], axis=1) / 0.5
        target = np.zeros(3, int)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert got == pytest.approx(-np.mean(logp[np.arange(3), target]), rel=1e-5)
    w = np.array([0.0, 1.0, 2.5], "float32")                 # Keras's sum over batch size
    weighted = float(model.contrastive_loss(x, None, out, tf.constant(w), training=True))
    assert weighted == pytest.approx(-np.mean(w * logp[np.arange(3), target]), rel=1e-5)


def test_npid_trains_updates_the_bank_and_round_trips(tmp_path):
    images, labels = _data(n=24)
    ds = sct.data.batches(sct.data.with_index(
        tf.data.Dataset.from_tensor_slices((images, labels))), 8, training=True, seed=0)
    model = _model("nce", num_negatives=8, n=24, probe_classes=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = model.bank.read().numpy()
    history = model.fit(ds, epochs=2, verbose=0).history
    assert {"loss", "contrastive_accuracy", "probe_accuracy"} <= set(history)
    after = model.bank.read().numpy()
    assert np.all(np.any(np.abs(after - before) > 1e-6, axis=1))    # every slot moved
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, rtol=1e-5)
    # The bank, Z and the step count are in the .keras file.
    path = str(tmp_path / "npid.keras")
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(again.bank.read().numpy(), after)
    assert float(again.nce_z) == pytest.approx(float(model.nce_z))
    assert int(again.steps_seen) == 6 and again.num_negatives == 8
    x = images[:2].astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_npid_bad_input():
    images, labels = _data(n=24)
    plain = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    with pytest.raises(ValueError, match="with_index"):
        model = _model(n=24)
        model.compile(optimizer="adam")
        model.fit(plain, epochs=1, verbose=0)
    indexed = sct.data.batches(sct.data.with_index(
        tf.data.Dataset.from_tensor_slices((images, labels))), 8, training=True)
    small = _model(n=16)
    small.compile(optimizer="adam")
    with pytest.raises(tf.errors.InvalidArgumentError, match="one slot per sample"):
        small.fit(indexed, epochs=1, verbose=0)
    large = _model(n=40)
    large.compile(optimizer="adam")
    with pytest.warns(UserWarning, match="16 of the bank's 40 slots were not fed.*"
                      "highest index fed: 23.*larger than the dataset.*part of the dataset"):
        large.fit(indexed, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="loss"):
        _model(loss="infonce")
    with pytest.raises(ValueError, match="num_negatives=None"):
        _model(loss="nce", num_negatives=None)
    with pytest.raises(ValueError, match="bank_size"):
        _model(n=1)
    with pytest.raises(ValueError, match="compile it with an NPIDLoss"):
        _model().compile(optimizer="adam", loss="mse")
