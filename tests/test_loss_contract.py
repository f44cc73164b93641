"""The one loss contract: what a loss reads beyond `y_pred` comes as call
arguments; per-sample values reduced by Keras; a class and a function each."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct

RNG = np.random.default_rng(0)


def _unit(*shape):
    x = RNG.normal(size=shape).astype("float32")
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_every_family_loss_is_a_contrastive_loss_with_a_function():
    names = [n for n in sct.losses.__all__ if n.endswith("Loss") and n != "ContrastiveLoss"]
    for name in names:
        cls = getattr(sct.losses, name)
        if name == "BYOLLoss" or name == "DistillationLoss":    # plain (y_true, y_pred) losses
            assert issubclass(cls, keras.losses.Loss)
        else:
            assert issubclass(cls, sct.losses.ContrastiveLoss), name
        function = {"BYOLLoss": None, "ProtoNCELoss": "proto_nce", "BarlowTwinsLoss":
                    "barlow_twins_loss", "HardNegativeLoss": "hard_negative_loss",
                    "ConditionalContrastiveLoss": "conditional_contrastive_loss",
                    "HybridMemoryLoss": "hybrid_memory_loss"}.get(
            name, name[:-4].lower().replace("supcon", "supcon") + "_loss")
        if function is not None:
            assert callable(getattr(sct.losses, function)), (name, function)


def test_extras_are_call_arguments_and_leave_no_state_on_the_loss():
    loss = sct.losses.MoCoLoss(temperature=0.2)
    before = dict(vars(loss))
    qk, queue = _unit(4, 2, 8), _unit(16, 8)
    with_queue = float(loss(None, qk, queue=queue))
    assert dict(vars(loss)).keys() == before.keys()
    assert with_queue == pytest.approx(float(np.mean(sct.losses.moco_loss(
        None, qk, queue, None, temperature=0.2))), rel=1e-6)
    assert float(loss(None, qk)) != pytest.approx(with_queue)       # the queue mattered
    with pytest.raises(TypeError, match="queues"):
        loss(None, qk, queues=queue)
    # Sample weights and the reduction are Keras's.
    w = np.array([1.0, 0.0, 2.0, 1.0], "float32")
    per = sct.losses.moco_loss(None, qk, queue, None, temperature=0.2).numpy()
    assert float(loss(None, qk, sample_weight=w, queue=queue)) == pytest.approx(
        float(np.sum(per * w) / 4), rel=1e-6)
    summed = sct.losses.MoCoLoss(temperature=0.2, reduction="sum")
    assert float(summed(None, qk, queue=queue)) == pytest.approx(float(per.sum()), rel=1e-6)


def test_npid_loss_matches_a_loop_reference():
    sims = np.clip(RNG.normal(size=(3, 6)), -1, 1).astype("float32")     # own slot first
    t, n, m = 0.5, 50, 5
    z = float(n * np.mean(np.exp(sims / t)))
    loss = sct.losses.NPIDLoss(t)
    got = sct.losses.npid_loss(None, sims, t, "nce", m / n, z).numpy()
    for i in range(3):
        p = np.exp(sims[i] / t) / z
        h = p / (p + m / n)
        ref = -np.log(h[0]) - np.sum(np.log(1 - h[1:]))
        assert got[i] == pytest.approx(ref, rel=1e-5)
    assert float(loss(None, sims, noise_ratio=m / n, z=z)) == pytest.approx(got.mean(), rel=1e-6)
    soft = sct.losses.NPIDLoss(t, kind="softmax")
    ref = np.mean([-np.log(np.exp(s[0] / t) / np.exp(s / t).sum()) for s in sims])
    assert float(soft(None, sims)) == pytest.approx(ref, rel=1e-5)
    # Every slot: the own slot's index is the target.
    assert float(soft(np.array([0, 0, 0]), sims)) == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError, match="needs `noise_ratio`"):
        loss(None, sims)
    with pytest.raises(ValueError, match="kind"):
        sct.losses.NPIDLoss(kind="infonce")
    assert sct.losses.NPIDLoss.from_config(soft.get_config()).kind == "softmax"


def test_proto_nce_loss_is_proto_nce_per_query():
    q, c = _unit(4, 8), _unit(5, 8)
    phi, ids = np.full([5], 0.3, "float32"), np.array([0, 1, 1, 3])
    loss = sct.losses.ProtoNCELoss(num_negatives=2)
    per = sct.losses.proto_nce(q, c, phi, ids, 2, seed=(3, 4)).numpy()
    assert float(loss(ids, q, centroids=c, phi=phi, seed=(3, 4))) == pytest.approx(
        per.mean(), rel=1e-6)
    # With every unused cluster as a negative (r >= 3 here), query i's loss is
    # the cross-entropy over the batch's positives then the unused clusters.
    per_all = sct.losses.proto_nce(q, c, phi, ids, 10).numpy()
    candidates = [0, 1, 1, 3, 2, 4]
    for i in range(4):
        logits = np.array([q[i] @ c[j] / phi[j] for j in candidates])
        assert per_all[i] == pytest.approx(np.log(np.exp(logits).sum()) - logits[i], rel=1e-5)
    with pytest.raises(ValueError, match="centroids"):
        loss(ids, q)
    assert sct.losses.ProtoNCELoss.from_config(loss.get_config()).num_negatives == 2


def test_distillation_loss_is_the_softened_cross_entropy():
    teacher = RNG.normal(size=(3, 4)).astype("float32")
    student = RNG.normal(size=(3, 4)).astype("float32")
    t = 2.0
    p = np.exp(teacher / t) / np.exp(teacher / t).sum(-1, keepdims=True)
    log_q = student / t - np.log(np.exp(student / t).sum(-1, keepdims=True))
    ref = -(p * log_q).sum(-1)
    np.testing.assert_allclose(sct.losses.distillation_loss(teacher, student, t), ref,
                               rtol=1e-5)
    assert float(sct.losses.DistillationLoss(t)(teacher, student)) == pytest.approx(
        ref.mean(), rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        sct.losses.DistillationLoss(0.0)


def test_pcl_reads_its_temperature_from_the_compiled_loss():
    enc = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(8)])
    model = sct.models.PCLModel(enc, 32, num_clusters=(2,), warmup_epochs=0, queue_size=16,
                                head=sct.heads.ProjectionHead(4, kind="linear"),
                                temperature=0.2, bn_groups=1)
    emb = tf.math.l2_normalize(tf.constant(RNG.normal(size=(32, 4)), tf.float32), -1)
    phis = []
    for temperature in (0.2, 0.8):
        model.compile(optimizer="sgd", loss=sct.losses.MoCoLoss(temperature=temperature))
        model.set_clusters(emb.numpy(), seed=0)
        phis.append(model.phi[0].numpy().copy())
    # phi is scaled to the compiled loss's temperature (its mean), not the constructor's.
    assert np.mean(phis[1]) == pytest.approx(4 * np.mean(phis[0]), rel=1e-4)
