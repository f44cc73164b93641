"""Better negatives and mixing (HCL, the debiased loss, MoCHi, i-Mix,
adversarial views): each against a loop reference from its paper's
pseudo-code, the special cases that reduce to the base method, two replicas,
saving, and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf.losses import (HardNegativeLoss, hard_negative_loss, hard_negative_terms, moco_loss,
                              supcon_loss)
from supcon_tf.mixing import mix_hardest, mochi_negatives
from tests.reference import finite_differences, hard_negative_reference, moco_reference
from tests.test_distribute import replicated, single_device
from tests.test_models import _images
from tests import tiny

SHAPE = (28, 28, 1)


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


def test_hard_negative_terms_report_where_the_clamp_binds():
    # Views agreeing strongly for some samples and not at all for others, so
    # that the clamp binds for some anchors and not for others.
    rng = np.random.default_rng(3)
    z = rng.normal(size=(8, 2, 6)).astype("float32")
    z[:4, 1] = z[:4, 0] + 0.1 * z[:4, 1]
    labels = np.array([0, 1, 2, 0, 1, 2, 3, 3])
    seen = set()
    for options in (dict(temperature=0.2, tau_plus=0.1, beta=0.0),
                    dict(temperature=0.2, tau_plus=0.1, beta=1.0),
                    dict(temperature=0.5, tau_plus=0.3, beta=0.5)):
        for y in (None, labels):
            terms = hard_negative_terms(y, z, **options)
            want_loss, want_clamped = hard_negative_reference(z, y, return_clamped=True,
                                                              **options)
            np.testing.assert_allclose(terms["loss"], want_loss, rtol=2e-5)
            np.testing.assert_array_equal(terms["clamped"], want_clamped)
            np.testing.assert_allclose(hard_negative_loss(y, z, **options), want_loss, rtol=2e-5)
            seen.update(want_clamped.tolist())
    assert {0.0, 1.0} <= seen                 # clamped and free anchors both occur
    # tau_plus = 0 (NT-Xent and HCL without debiasing): never clamped.
    for beta in (0.0, 1.0):
        assert not np.any(hard_negative_terms(None, z, 0.2, tau_plus=0.0, beta=beta)["clamped"])


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
    numeric = finite_differences(lambda v: hard_negative_reference(v).mean(), z)
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


# -- MoCHi ---------------------------------------------------------------------------

def _unit(a):
    a = np.asarray(a, np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def mochi_reference(q, queue, n_hard, draws, labels=None, queue_labels=None):
    """MoCHi's mixes by loops (Kalantidis et al., section 4): rank the queue
    by q . n (negatives only), keep the N hardest; h = normalize(a n_i +
    (1 - a) n_j); h' = normalize(b q + (1 - b) n_j), b = 0.5 * draw."""
    q, queue = _unit(q), _unit(queue)
    u_i, u_j, alpha, u_q, beta = (np.asarray(d, np.float64) for d in draws)
    out = []
    for b in range(len(q)):
        order = sorted((m for m in range(len(queue))
                        if labels is None or queue_labels[m] != labels[b]),
                       key=lambda m: -(q[b] @ queue[m]))[:n_hard]
        if not order:
            out.append(np.zeros((u_i.shape[1] + u_q.shape[1], q.shape[1])))
            continue
        pick = lambda u: queue[order[min(int(u * len(order)), len(order) - 1)]]
        rows = [alpha[b, k] * pick(u_i[b, k]) + (1 - alpha[b, k]) * pick(u_j[b, k])
                for k in range(u_i.shape[1])]
        rows += [0.5 * beta[b, k] * q[b] + (1 - 0.5 * beta[b, k]) * pick(u_q[b, k])
                 for k in range(u_q.shape[1])]
        out.append(_unit(np.array(rows)))
    return np.array(out)


@pytest.mark.parametrize("labelled", [False, True])
def test_mochi_mixes_match_the_loop_reference(labelled):
    rng = np.random.default_rng(10)
    q, queue = rng.normal(size=(5, 6)), rng.normal(size=(30, 6))
    labels = rng.integers(0, 3, 5) if labelled else None
    queue_labels = rng.integers(0, 3, 30) if labelled else None
    draws = [rng.random((5, 7)) for _ in range(3)] + [rng.random((5, 3)) for _ in range(2)]
    want = mochi_reference(q, queue, 8, draws, labels, queue_labels)
    # The ranking as mochi_negatives makes it, then the mixing.
    uq, un = _unit(q).astype("float32"), _unit(queue).astype("float32")
    sims = uq @ un.T
    if labelled:
        sims[labels[:, None] == queue_labels[None, :]] = -np.inf
    hardest = np.argsort(-sims, axis=1, kind="stable")[:, :8].astype("int32")
    n_valid = np.isfinite(np.take_along_axis(sims, hardest, 1)).sum(1)
    got = mix_hardest(uq, un, hardest, n_valid, [d.astype("float32") for d in draws])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mochi_negatives_are_hard_unit_and_without_gradient():
    rng = np.random.default_rng(11)
    q = rng.normal(size=(4, 8)).astype("float32")
    # 6 hard negatives near each query direction among 60 far ones.
    far = rng.normal(size=(60, 8)).astype("float32")
    near = np.repeat(q, 6, axis=0) + 0.3 * rng.normal(size=(24, 8)).astype("float32")
    queue = np.concatenate([far, near])
    q_t = tf.constant(q)
    with tf.GradientTape() as tape:
        tape.watch(q_t)
        mixes = mochi_negatives(q_t, queue, n_hard=6, s=6, s_prime=4, seed=[1, 2])
        total = tf.reduce_sum(mixes)
    assert tape.gradient(total, q_t) is None                  # nothing flows back
    mixes = mixes.numpy()
    assert mixes.shape == (4, 10, 8)
    np.testing.assert_allclose(np.linalg.norm(mixes, axis=-1), 1.0, rtol=1e-5)
    sims = np.einsum("bd,bsd->bs", _unit(q), mixes)
    hard = np.sort(_unit(q) @ _unit(queue).T, axis=1)[:, -6:]
    # A normalised convex mix of two hard negatives is at least as similar to
    # the query as the less similar of them; the query mixes more so.
    assert np.all(sims[:, :6] >= hard[:, :1] - 1e-5)
    assert np.all(sims[:, 6:] >= hard[:, :1] - 1e-5)
    assert sims[:, 6:].mean() > sims[:, :6].mean()
    # Stateless: the same seed gives the same mixes, another seed others.
    np.testing.assert_array_equal(mochi_negatives(q, queue, 6, 6, 4, [1, 2]), mixes)
    assert not np.allclose(mochi_negatives(q, queue, 6, 6, 4, [1, 3]), mixes)
    # An empty queue, or one with only the query's class: zero rows.
    assert not np.any(mochi_negatives(q, queue[:0], 6, 6, 4, [1, 2]).numpy())
    same = mochi_negatives(q, queue, 6, 6, 4, [1, 2], labels=np.zeros(4, "int32"),
                           queue_labels=np.zeros(len(queue), "int32"))
    assert not np.any(same.numpy())


@pytest.mark.parametrize("labelled", [False, True])
def test_moco_loss_with_extra_negatives_matches_the_reference(labelled):
    rng = np.random.default_rng(12)
    qk = rng.normal(size=(6, 2, 5)).astype("float32")
    queue = rng.normal(size=(10, 5)).astype("float32")
    extra = rng.normal(size=(6, 3, 5)).astype("float32")
    extra[2, 1] = 0.0                                          # absent
    y = rng.integers(0, 3, 6) if labelled else None
    queue_labels = rng.integers(0, 3, 10) if labelled else None
    got = moco_loss(y, qk, queue, queue_labels, temperature=0.3, extra_negatives=extra)
    want = moco_reference(y, qk[:, 0], qk[:, 1], queue, queue_labels, 0.3, extra=extra)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # All-zero extras change nothing (values and gradients); extras without a
    # queue still count.
    for options in ({}, {"extra_negatives": np.zeros_like(extra)}):
        loss = lambda y_, z: moco_loss(y_, z, queue, queue_labels, 0.3, **options)
        value, grad = single_device(loss, y, qk)
        if not options:
            base_value, base_grad = value, grad
    np.testing.assert_allclose(value, base_value, rtol=1e-6)
    np.testing.assert_allclose(grad, base_grad, rtol=1e-5, atol=1e-7)
    assert np.abs(base_grad).max() > 1e-2
    if not labelled:
        np.testing.assert_allclose(
            moco_loss(None, qk, None, temperature=0.3, extra_negatives=extra),
            moco_reference(None, qk[:, 0], qk[:, 1], None, temperature=0.3, extra=extra),
            rtol=1e-5)
    with pytest.raises(ValueError, match="extra_negatives.*Received: extra_negatives.shape"):
        moco_loss(y, qk, queue, queue_labels, extra_negatives=extra[:, :, :4])


def _moco(**kwargs):
    keras.utils.set_random_seed(0)
    return sct.models.MoCoModel(tiny.encoder(SHAPE),
                                head=sct.heads.ProjectionHead(16), queue_size=32,
                                bn_groups=1, **kwargs)


def test_mochi_model_is_moco_before_its_start_epoch_and_round_trips(tmp_path):
    x, y = _images(32)
    views = np.stack([x, x[:, :, ::-1]], axis=1)
    histories = {}
    for name, extra in (("moco", {}), ("mochi", dict(mochi_n=16, mochi_s=8, mochi_s_prime=4,
                                                     mochi_start_epoch=2))):
        model = _moco(**extra)
        # Learning rate 0: the same weights at every step, so the losses compare
        # the objectives alone (a small network trained on 8-sample batches
        # turns round-off into visible differences within a few steps).
        model.compile(optimizer=keras.optimizers.SGD(0.0))
        histories[name] = model.fit(views, batch_size=8, epochs=3, verbose=0,
                                    shuffle=False).history["loss"]
    # Epochs 0 and 1 (queue filling up, then full): exactly MoCo. From
    # epoch 2 the synthetic negatives raise the loss.
    np.testing.assert_allclose(histories["mochi"][:2], histories["moco"][:2], rtol=1e-6)
    assert histories["mochi"][2] > histories["moco"][2] + 0.05
    assert int(model.mochi_start_step.numpy()) == 2 * 4
    # Saved and loaded with its settings and state; labelled training runs too.
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert (loaded.mochi_n, loaded.mochi_s, loaded.mochi_s_prime, loaded.mochi_start_epoch) == (
        16, 8, 4, 2)
    assert int(loaded.mochi_start_step.numpy()) == 8
    assert np.isfinite(loaded.fit(views, y, batch_size=8, epochs=1, verbose=0,
                                  shuffle=False).history["loss"][0])


def test_mochi_bad_input():
    with pytest.raises(ValueError, match="mochi_s.*Received: mochi_s=9"):
        _moco(mochi_n=8, mochi_s=9)
    with pytest.raises(ValueError, match="mochi_s_prime.*Received: mochi_s_prime=-1"):
        _moco(mochi_n=8, mochi_s=4, mochi_s_prime=-1)
    with pytest.raises(ValueError, match="mochi_n.*Received: mochi_n=0"):
        _moco(mochi_n=0)
    with pytest.raises(TypeError, match="mochi_start_epoch=1.5"):
        _moco(mochi_n=8, mochi_s=4, mochi_s_prime=2, mochi_start_epoch=1.5)
    with pytest.raises(ValueError, match="mochi_start_epoch=-1"):
        _moco(mochi_n=8, mochi_s=4, mochi_s_prime=2, mochi_start_epoch=-1)
    with pytest.raises(ValueError, match="mochi_s"):
        mochi_negatives(np.ones((2, 3)), np.ones((4, 3)), n_hard=2, s=3, s_prime=0, seed=[0, 0])


# -- i-Mix ---------------------------------------------------------------------------

def _imix_model(cls, **kwargs):
    keras.utils.set_random_seed(0)
    encoder = tiny.encoder(SHAPE)
    if cls is sct.models.MoCoModel:
        kwargs.setdefault("queue_size", 32)
        kwargs.setdefault("bn_groups", 1)
        return cls(encoder, head=sct.heads.ProjectionHead(16), **kwargs)
    if cls is sct.models.BYOLModel:
        return cls(encoder, head=sct.heads.byol_projector(16, 32),
                   predictor=sct.heads.byol_predictor(16, 32), **kwargs)
    return cls(encoder, head=sct.heads.ProjectionHead(16), **kwargs)


def test_imix_mixes_view_0_as_keras_mixup_and_cutmix_do():
    x, _ = _images(8)
    views = tf.constant(np.stack([x, x[:, :, ::-1]], axis=1) / 255.0, tf.float32)
    model = _imix_model(sct.models.SupConModel, imix="mixup", imix_alpha=0.4)
    mixed, lam, order = model.imix_mix(views)
    lam, order, v = lam.numpy(), order.numpy(), views.numpy()
    assert sorted(order) == list(range(8)) and np.all((lam >= 0) & (lam <= 1))
    want = lam[:, None, None, None] * v[:, 0] + (1 - lam[:, None, None, None]) * v[order, 0]
    np.testing.assert_allclose(mixed[:, 0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mixed[:, 1], v[:, 1])              # view 1 untouched
    model = _imix_model(sct.models.SupConModel, imix="cutmix")
    mixed, lam, order = (t.numpy() for t in model.imix_mix(views))
    for i in range(8):
        from_other = np.isclose(mixed[i, 0], v[order[i], 0]) & ~np.isclose(v[i, 0], v[order[i], 0])
        own = np.isclose(mixed[i, 0], v[i, 0])
        assert np.all(own | from_other)                              # a box pasted, no blend
        if order[i] != i:
            # lam is the share of the image left to sample i (pixels equal in
            # both images cannot be told apart).
            assert 1 - lam[i] - 0.05 <= from_other.mean() <= 1 - lam[i] + 1e-6


@pytest.mark.parametrize("cls", [sct.models.SupConModel, sct.models.MoCoModel,
                                 sct.models.BYOLModel])
def test_imix_loss_is_the_lam_weighted_sum_and_lam_1_is_the_base_method(cls):
    x, y = _images(8)
    views = tf.constant(np.stack([x, x[:, :, ::-1]], axis=1), tf.float32)
    model = _imix_model(cls, imix="mixup")
    model.compile(optimizer="sgd")
    model.build(views.shape[:1] + views.shape[2:])
    if cls is sct.models.MoCoModel:          # negatives to tell the keys apart from
        model.queue.enqueue(tf.random.stateless_normal([32, 16], seed=[0, 1]),
                            -tf.ones([32], tf.int64))
    out = model.forward(views, True)
    order = tf.constant([3, 0, 1, 2, 7, 4, 5, 6])
    labels = None if cls is sct.models.MoCoModel else tf.constant(y)
    # lam = 1: exactly the method's loss (the partner term has weight 0).
    ones = tf.ones([8])
    got = model.imix_loss(None, labels, out, None, True, ones, order)
    base = model.contrastive_loss(None, labels, out, None, True)
    assert float(got) == float(base)
    # lam in (0, 1): lam * loss(i) + (1 - lam) * loss(order(i)), per sample.
    lam = tf.constant(np.linspace(0.55, 0.95, 8), tf.float32)
    permuted = model.partners_permuted(out, order)
    y_other = None if labels is None else tf.gather(labels, order)
    per_own = [float(model.contrastive_loss(None, labels, out, tf.one_hot(i, 8), True))
               for i in range(8)]
    per_other = [float(model.contrastive_loss(None, y_other, permuted, tf.one_hot(i, 8), True))
                 for i in range(8)]
    want = sum(l * a + (1 - l) * b for l, a, b in zip(lam.numpy(), per_own, per_other))
    assert float(model.imix_loss(None, labels, out, None, True, lam, order)) == pytest.approx(
        want, rel=1e-5)
    assert abs(sum(per_other) - sum(per_own)) > 1e-3            # the partners matter


def test_imix_trains_saves_and_rejects_what_it_cannot_do(tmp_path):
    x, y = _images(16)
    model = _imix_model(sct.models.SupConModel, imix="cutmix", imix_alpha=0.5,
                        augmenter=sct.augment.simclr(SHAPE, seed=0), probe_classes=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0]) and "probe_accuracy" in logs
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert (loaded.imix, loaded.imix_alpha) == ("cutmix", 0.5)
    # Evaluation does not mix.
    assert np.isfinite(loaded.evaluate(x, y, batch_size=8, verbose=0)[0])
    # XLA cannot compile the Beta draw: jit_compile=True falls back to no XLA
    # (Keras's warning) and trains, rather than failing in the first step.
    model = _imix_model(sct.models.SupConModel, imix="mixup")
    with pytest.warns(UserWarning, match="jit_compile"):
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    assert model.jit_compile is False
    views = np.stack([x, x[:, :, ::-1]], axis=1).astype("float32") / 255.0
    assert np.isfinite(model.fit(views, y, batch_size=8, epochs=1, verbose=0).history["loss"][0])
    with pytest.raises(ValueError, match="imix=.mixmatch."):
        _imix_model(sct.models.SupConModel, imix="mixmatch")
    with pytest.raises(ValueError, match="imix_alpha=0"):
        _imix_model(sct.models.SupConModel, imix="mixup", imix_alpha=0)
    with pytest.raises(ValueError, match="imix_alpha=2"):
        _imix_model(sct.models.SupConModel, imix="cutmix", imix_alpha=2)
    with pytest.raises(ValueError, match="views=3"):
        _imix_model(sct.models.SupConModel, imix="mixup", views=3)
    with pytest.raises(ValueError, match="BarlowTwinsModel does not support i-Mix"):
        _imix_model(sct.models.BarlowTwinsModel, imix="mixup")
    with pytest.raises(ValueError, match="symmetric=True"):
        _imix_model(sct.models.MoCoModel, imix="mixup", symmetric=True)
    with pytest.raises(ValueError, match="probe would learn from mixed images"):
        _imix_model(sct.models.MoCoModel, imix="mixup", probe_classes=3)


# -- adversarial views (CLAE) ----------------------------------------------------------

@pytest.mark.parametrize("cls", [sct.models.SupConModel, sct.models.MoCoModel,
                                 sct.models.BYOLModel])
def test_adversarial_view_is_fgsm_on_the_loss_and_raises_it(cls):
    x, _ = _images(8)
    # Views in the library's [0, 255] units (the default value_range): eps is
    # a fraction of that range, so the step is 0.03 * 255 per pixel.
    views = tf.constant(np.stack([x, x[:, :, ::-1]], axis=1), tf.float32)
    model = _imix_model(cls, adversarial_eps=0.03, adversarial_weight=0.5)
    model.compile(optimizer="sgd")
    model.build(views.shape[:1] + views.shape[2:])
    if cls is sct.models.MoCoModel:
        model.queue.enqueue(tf.random.stateless_normal([32, 16], seed=[0, 2]),
                            -tf.ones([32], tf.int64))
    adversarial = model.adversarial_view(None, None, views, None).numpy()
    # The FGSM step, from the gradient computed here.
    clean = views[:, 0]
    start = tf.identity(clean)
    with tf.GradientTape() as tape:
        tape.watch(start)
        loss = model.contrastive_loss(None, None, model.forward(tf.stack([start, clean], 1), True),
                                      None, True)
    grad = tape.gradient(loss, start).numpy()
    np.testing.assert_allclose(adversarial, clean.numpy() + 0.03 * 255.0 * np.sign(grad),
                               atol=1e-4)
    assert np.abs(grad).max() > 0
    moved = np.abs(adversarial - clean.numpy())
    assert np.isclose(np.median(moved), 0.03 * 255.0, rtol=1e-5)
    # Images on [0, 1]: the same eps moves each pixel by 0.03.
    model.value_range = (0.0, 1.0)
    small = model.adversarial_view(None, None, views / 255.0, None).numpy()
    assert np.isclose(np.median(np.abs(small - clean.numpy() / 255.0)), 0.03, rtol=1e-5)
    model.value_range = (0.0, 255.0)
    # A small step makes the pair harder than the copy it started from (to
    # first order; a large one also moves BatchNorm's batch statistics).
    def pair_loss(first):
        out = model.forward(tf.stack([tf.constant(first), clean], 1), True)
        return float(model.contrastive_loss(None, None, out, None, True))
    model.adversarial_eps = 1e-5
    assert pair_loss(model.adversarial_view(None, None, views, None).numpy()) > pair_loss(
        clean.numpy())


def test_adversarial_eps_0_is_the_base_method_and_bad_input_raises(tmp_path):
    x, y = _images(16)
    views = np.stack([x, x[:, :, ::-1]], axis=1) / 255.0
    histories = []
    for options in ({}, {"adversarial_eps": 0.0, "adversarial_weight": 3.0}):
        model = _imix_model(sct.models.SupConModel, **options)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        histories.append(model.fit(views, y, batch_size=8, epochs=2, verbose=0,
                                   shuffle=False).history["loss"])
    assert histories[0] == histories[1]
    # On: trains, and the loss carries the weighted adversarial term.
    model = _imix_model(sct.models.SupConModel, adversarial_eps=0.02, adversarial_weight=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    logged = model.fit(views, y, batch_size=8, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(logged) and logged > histories[0][0]
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert (loaded.adversarial_eps, loaded.adversarial_weight) == (0.02, 0.5)
    assert loaded.value_range == (0.0, 255.0)
    with pytest.raises(ValueError, match="adversarial_eps=-0.1"):
        _imix_model(sct.models.SupConModel, adversarial_eps=-0.1)
    with pytest.raises(ValueError, match="adversarial_weight=-1"):
        _imix_model(sct.models.SupConModel, adversarial_eps=0.1, adversarial_weight=-1)
    with pytest.raises(ValueError, match="not both"):
        _imix_model(sct.models.SupConModel, adversarial_eps=0.1, imix="mixup")
    with pytest.raises(ValueError, match="views=3"):
        _imix_model(sct.models.SupConModel, adversarial_eps=0.1, views=3)
    with pytest.raises(ValueError, match=r"value_range=\(1, 0\)"):
        _imix_model(sct.models.SupConModel, adversarial_eps=0.1, value_range=(1, 0))
    with pytest.raises(ValueError, match="value_range=3"):
        _imix_model(sct.models.SupConModel, adversarial_eps=0.1, value_range=3)
