"""Better negatives and mixing (HCL, the debiased loss, MoCHi, i-Mix,
adversarial views): each against a loop reference from its paper's
pseudo-code, the special cases that reduce to the base method, two replicas,
saving, and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.losses import HardNegativeLoss, hard_negative_loss, supcon_loss
from tests.reference import hard_negative_reference
from tests.test_distribute import replicated, single_device


def _views(seed, batch=6, dim=5):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(batch, 2, dim)).astype("float32")
    z[:, 1] = 0.5 * z[:, 0] + z[:, 1]                   # views of a sample agree a little
    return z


# -- HardNegativeLoss (HCL) and the debiased loss ---------------------------------------

HCL_OPTIONS = [dict(temperature=0.5, tau_plus=0.1, beta=1.0),     # the paper's defaults
               dict(temperature=0.2, tau_plus=0.05, beta=2.0),
               dict(temperature=1.0, tau_plus=0.5, beta=0.5),
               dict(temperature=0.5, tau_plus=0.1, beta=0.0),     # debiased (DCL)
               dict(temperature=0.3, tau_plus=0.0, beta=0.0),     # NT-Xent
               dict(temperature=0.1, tau_plus=0.0, beta=1.0)]


@pytest.mark.parametrize("options", HCL_OPTIONS)
def test_hard_negative_loss_matches_the_loop_reference(options):
    z = _views(1)
    got = hard_negative_loss(None, z, **options).numpy()
    np.testing.assert_allclose(got, hard_negative_reference(z, **options), rtol=2e-5)
    labels = np.array([0, 1, 0, 2, 1, 0])
    got = hard_negative_loss(labels, z, **options).numpy()
    np.testing.assert_allclose(got, hard_negative_reference(z, labels, **options), rtol=2e-5)


def test_hard_negative_special_cases():
    z = _views(2, batch=8)
    # beta = 0, tau_plus = 0: NT-Xent, i.e. SupCon without labels.
    for t in (0.1, 0.5):
        np.testing.assert_allclose(hard_negative_loss(None, z, t, tau_plus=0.0, beta=0.0),
                                   supcon_loss(None, z, temperature=t), rtol=1e-5)
    # beta = 0: the debiased estimator written out (Chuang et al., eq. 8 with
    # N = 2B - 2 negatives and M = 1 positive), computed here directly.
    u = z / np.linalg.norm(z, axis=-1, keepdims=True)
    flat = u.reshape(-1, u.shape[-1]).astype(np.float64)
    t, tau = 0.5, 0.2
    e = np.exp(flat @ flat.T / t)
    want = []
    for a in range(len(flat)):
        pos = e[a, a ^ 1]
        neg = np.delete(e[a], [a, a ^ 1])
        n = len(neg)
        ng = max((neg.sum() - tau * n * pos) / (1 - tau), n * np.exp(-1 / t))
        want.append(-np.log(pos / (pos + ng)))
    want = np.array(want).reshape(-1, 2).mean(axis=1)
    np.testing.assert_allclose(hard_negative_loss(None, z, t, tau, 0.0), want, rtol=1e-5)
    # beta > 0 weights the hard negatives up: the loss grows with beta.
    values = [float(tf.reduce_mean(hard_negative_loss(None, z, 0.5, 0.1, b)))
              for b in (0.0, 1.0, 3.0)]
    assert values[0] < values[1] < values[2]
    # Labels: with every other sample of the anchor's class, no negative is
    # left and the value is 0; classes the batch does not share change nothing.
    assert np.all(hard_negative_loss(np.zeros(8), z).numpy() == 0.0)
    np.testing.assert_allclose(hard_negative_loss(np.arange(8), z),
                               hard_negative_loss(None, z), rtol=1e-6)
    # One-hot labels are class ids.
    ids = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    np.testing.assert_allclose(hard_negative_loss(np.eye(3)[ids], z),
                               hard_negative_loss(ids, z), rtol=1e-6)


def test_hard_negative_loss_is_stable_where_exp_overflows():
    # exp(s / T) overflows float32 at T = 0.01 (logits up to 100): the log
    # domain computation stays finite and equals the float64 reference.
    z = _views(3)
    got = hard_negative_loss(None, z, temperature=0.01, tau_plus=0.1, beta=1.0).numpy()
    assert np.all(np.isfinite(got))
    u = z / np.linalg.norm(z, axis=-1, keepdims=True)
    # The reference in float64 can still hold exp(200).
    np.testing.assert_allclose(
        got, hard_negative_reference(u, temperature=0.01, tau_plus=0.1, beta=1.0), rtol=1e-4)
    bad = z.copy()
    bad[0, 0, 0] = np.nan
    assert np.all(np.isnan(hard_negative_loss(None, bad).numpy()))


def test_hard_negative_gradient_matches_finite_differences():
    z = _views(4, batch=4, dim=3)
    loss = HardNegativeLoss(temperature=0.5, tau_plus=0.1, beta=1.0)
    _, grad = single_device(loss, None, z)
    numeric = np.zeros_like(z, dtype=np.float64)
    eps = 1e-5
    for index in np.ndindex(z.shape):
        up, down = z.astype(np.float64), z.astype(np.float64)
        up[index] += eps
        down[index] -= eps
        numeric[index] = (hard_negative_reference(up).mean()
                          - hard_negative_reference(down).mean()) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=2e-5)
    assert np.abs(numeric).max() > 1e-2


@pytest.mark.parametrize("labelled", [False, True])
def test_hard_negative_two_replicas_equal_one_device(strategy, labelled):
    z = _views(5, batch=8)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1], "int32") if labelled else None
    loss = HardNegativeLoss(temperature=0.4, tau_plus=0.1, beta=1.0)
    want, want_grad = single_device(loss, y, z)
    values, grads = replicated(strategy, loss, y, z)
    assert sum(values) == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(grads, want_grad, rtol=1e-4, atol=1e-6)
    # Each replica's negatives are the global batch's, not its own half's.
    local = float(loss(None if y is None else y[:4], z[:4]))
    assert abs(local - 2 * values[0]) > 1e-3


def test_hard_negative_loss_keras_use(tmp_path):
    loss = HardNegativeLoss(temperature=0.3, tau_plus=0.05, beta=2.0)
    z = _views(6)
    weights = np.array([1, 0, 2, 1, 1, 0], "float32")
    per_sample = hard_negative_loss(None, z, 0.3, 0.05, 2.0).numpy()
    assert float(loss(None, z, sample_weight=weights)) == pytest.approx(
        (per_sample * weights).sum() / 6, rel=1e-6)
    clone = HardNegativeLoss.from_config(loss.get_config())
    assert (clone.temperature, clone.tau_plus, clone.beta) == (0.3, 0.05, 2.0)
    assert keras.losses.deserialize(keras.losses.serialize(loss)).beta == 2.0
    # In a compiled model, saved and loaded with the loss.
    inputs = keras.Input((2, 4))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.compile(optimizer="sgd", loss=loss)
    x = np.random.default_rng(0).normal(size=(8, 2, 4)).astype("float32")
    y = np.arange(8)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.loss.beta == 2.0 and loaded.loss.tau_plus == 0.05


def test_hard_negative_bad_input():
    z = _views(7)
    with pytest.raises(ValueError, match="tau_plus.*Received: tau_plus=1.0"):
        HardNegativeLoss(tau_plus=1.0)
    with pytest.raises(ValueError, match="tau_plus=-0.1"):
        hard_negative_loss(None, z, tau_plus=-0.1)
    with pytest.raises(ValueError, match="beta=-1"):
        HardNegativeLoss(beta=-1)
    with pytest.raises(TypeError, match="beta='hard'"):
        HardNegativeLoss(beta="hard")
    with pytest.raises(ValueError, match="temperature"):
        HardNegativeLoss(temperature=0)
    with pytest.raises(ValueError, match=r"\[batch, 2, dim\].*\(6, 3, 5\)"):
        hard_negative_loss(None, np.zeros((6, 3, 5), "float32"))
    with pytest.raises(ValueError, match=r"\[batch, 2, dim\].*\(6, 5\)"):
        hard_negative_loss(None, z[:, 0])
    with pytest.raises(ValueError, match="number of labels"):
        hard_negative_loss(np.arange(5), z)
    with pytest.raises(TypeError, match="y_true"):
        hard_negative_loss(np.array(["a"] * 6), z)
