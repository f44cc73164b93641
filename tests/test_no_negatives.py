"""BYOL, SimSiam, Barlow Twins and VICReg: the losses against loop references
from the papers' pseudo-code, under two replicas, the models' target
networks and stop-gradients, the collapse monitor, saving and resuming."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf.losses import (BarlowTwinsLoss, BYOLLoss, VICRegLoss, barlow_twins_loss,
                              vicreg_loss, vicreg_terms)
from supcon_tf.momentum import weight_pairs
from tests.reference import barlow_twins_reference, finite_differences, vicreg_reference
from tests.resume import killed_then_resumed
from tests.test_distribute import replicated, single_device
from tests.test_models import _images
from tests import tiny

SHAPE = (28, 28, 1)


def _pairs(seed, batch=8, dim=5):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(batch, 2, dim)).astype("float32")
    z[:, 1] = 0.6 * z[:, 0] + 0.8 * z[:, 1]            # correlated branches
    return z


def _reference(name, z, **options):
    fn = barlow_twins_reference if name == "barlow" else vicreg_reference
    return fn(np.asarray(z)[:, 0], np.asarray(z)[:, 1], **options)


LOSSES = {"barlow": (BarlowTwinsLoss, [{}, {"lambda_": 0.5}, {"lambda_": 0.0}]),
          "vicreg": (VICRegLoss, [{}, {"sim_coeff": 1.0, "std_coeff": 3.0, "cov_coeff": 7.0},
                                  {"sim_coeff": 0.0, "std_coeff": 0.0}])}
CASES = [(name, options) for name, (_, all_options) in LOSSES.items()
         for options in all_options]


# -- the losses ----------------------------------------------------------------------

@pytest.mark.parametrize("name,options", CASES)
def test_batch_losses_match_loop_references(name, options):
    z = _pairs(1)
    value = LOSSES[name][0](**options)(None, z)
    assert value.shape == () and value.dtype == tf.float32
    assert float(value) == pytest.approx(_reference(name, z, **options), rel=1e-5)
    # y_true is ignored: labels change nothing.
    assert float(LOSSES[name][0](**options)(np.arange(8), z)) == pytest.approx(float(value))


def test_hand_cases():
    # One dimension, branches equal (+-1): standardised c = 1 / (1 + 1e-5).
    same = np.array([[[1.0], [1.0]], [[-1.0], [-1.0]]], "float32")
    c = 1 / (1 + 1e-5)
    assert float(barlow_twins_loss(same)) == pytest.approx((1 - c) ** 2, abs=1e-9)
    assert float(barlow_twins_loss(same * [[1.0], [-1.0]])) == pytest.approx((1 + c) ** 2)
    # Two dimensions, branch b swaps a's: c = [[0, 1], [1, 0]] (a's columns are
    # orthogonal): 2 on the diagonal, 2 * lambda off it.
    a = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], "float32")
    z = np.stack([a, a[:, ::-1]], axis=1)
    assert float(barlow_twins_loss(z, lambda_=0.25)) == pytest.approx(
        2 * 1 + 0.25 * 2 * c ** 2, rel=1e-5)
    # VICReg: equal branches with std > 1 and uncorrelated dims cost nothing;
    # collapsed (constant) branches cost relu(1 - sqrt(1e-4)) = 0.99 in variance.
    z = np.stack([3 * a, 3 * a], axis=1)
    assert [float(t) for t in vicreg_terms(z)] == pytest.approx([0.0, 0.0, 0.0], abs=1e-7)
    constant = np.ones((4, 2, 3), "float32")
    assert float(vicreg_loss(constant)) == pytest.approx(25 * 0.99, rel=1e-6)
    # Invariance alone: the MSE over batch and dimensions.
    z = np.stack([3 * a, 3 * a + 1], axis=1)
    assert float(vicreg_terms(z)[0]) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["barlow", "vicreg"])
def test_gradients_match_finite_differences(name):
    z = _pairs(2, batch=6, dim=3)
    _, grad = single_device(LOSSES[name][0](), None, z)
    numeric = finite_differences(lambda v: _reference(name, v), z)
    np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=2e-4)
    assert np.abs(numeric).max() > 1e-2


@pytest.mark.parametrize("name", ["barlow", "vicreg"])
def test_two_replicas_use_the_global_batch(strategy, name):
    """The per-replica values sum to the single-device loss of the global
    batch, and each replica's gradient is its slice of the global gradient."""
    z = _pairs(3, batch=8)
    loss = LOSSES[name][0]()
    want, want_grad = single_device(loss, None, z)
    values, grads = replicated(strategy, loss, None, z)
    assert sum(values) == pytest.approx(want, rel=1e-5)
    assert values[0] == pytest.approx(want / 2, rel=1e-5)       # not a local-batch loss
    np.testing.assert_allclose(grads, want_grad, rtol=1e-4, atol=1e-6)
    # The local-batch loss differs: the statistics must be global.
    local = float(loss(None, z[:4]))
    assert abs(local - want / 2) > 1e-3


def test_byol_loss_is_keras_cosine():
    rng = np.random.default_rng(4)
    p, t = rng.normal(size=(2, 6, 5)).astype("float32")
    cos = np.sum(p * t, 1) / np.linalg.norm(p, axis=1) / np.linalg.norm(t, axis=1)
    assert float(BYOLLoss()(t, p)) == pytest.approx(np.mean(2 - 2 * cos), rel=1e-5)
    weights = np.arange(6, dtype="float32")
    assert float(BYOLLoss()(t, p, sample_weight=weights)) == pytest.approx(
        np.sum(weights * (2 - 2 * cos)) / 6, rel=1e-5)
    assert BYOLLoss.from_config(BYOLLoss(axis=1).get_config()).axis == 1


def test_loss_bad_input():
    for loss in (BarlowTwinsLoss(), VICRegLoss()):
        with pytest.raises(ValueError, match=r"at least 2 samples.*\(1, 2, 4\)"):
            loss(None, np.ones((1, 2, 4), "float32"))
        with pytest.raises(ValueError, match=r"\[batch, 2, dim\].*\(4, 3, 4\)"):
            loss(None, np.ones((4, 3, 4), "float32"))
        with pytest.raises(ValueError, match="sample_weight"):
            loss(None, np.ones((4, 2, 4), "float32"), sample_weight=np.ones(4))

        @tf.function(input_signature=[tf.TensorSpec([None, 2, 4])])
        def dynamic(z, loss=loss):
            return loss(None, z)
        with pytest.raises(tf.errors.InvalidArgumentError, match="at least 2 samples"):
            dynamic(np.ones((1, 2, 4), "float32"))
    with pytest.raises(ValueError, match="lambda_=-1"):
        BarlowTwinsLoss(lambda_=-1)
    with pytest.raises(TypeError, match="cov_coeff='1'"):
        VICRegLoss(cov_coeff="1")
    with pytest.raises(ValueError, match="std_coeff=nan"):
        VICRegLoss(std_coeff=float("nan"))


# -- the models ----------------------------------------------------------------------

def _model(cls, **kwargs):
    keras.utils.set_random_seed(0)
    heads = {sct.models.BYOLModel: lambda: sct.heads.byol_projector(16, 32),
             sct.models.SimSiamModel: lambda: sct.heads.simsiam_projector(16, 32),
             sct.models.BarlowTwinsModel: lambda: sct.heads.barlow_twins_projector(16, 32),
             sct.models.VICRegModel: lambda: sct.heads.vicreg_expander(16, 32)}
    kwargs.setdefault("augmenter", sct.augment.simclr(SHAPE, seed=0))
    return cls(tiny.encoder(SHAPE), head=heads[cls](), **kwargs)


def _views(n):
    x, y = _images(n)
    return np.stack([x, x[:, :, ::-1]], axis=1), y


def test_byol_target_is_the_ema_and_gets_no_gradient():
    views, _ = _views(8)
    model = _model(sct.models.BYOLModel, augmenter=None, momentum=0.9,
                   momentum_schedule="constant")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    target_ids = {id(v) for v in model.target_encoder.weights + model.target_head.weights}
    assert not target_ids & {id(v) for v in model.trainable_variables}
    with tf.GradientTape() as tape:
        out = model.forward(tf.constant(views), training=True)
        loss = model.contrastive_loss(None, None, out, None, True)
    grads = tape.gradient(loss, model.target_encoder.weights + model.target_head.weights
                          + model.predictor.trainable_weights)
    n_target = len(model.target_encoder.weights + model.target_head.weights)
    assert all(g is None for g in grads[:n_target])
    assert all(g is not None for g in grads[n_target:])
    # The loss: both directions of 2 - 2 cos(prediction, other view's target).
    p, t = out["predictions"].numpy(), out["targets"].numpy()
    cos = lambda a, b: np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    want = np.mean(2 - 2 * cos(p[:, 0], t[:, 1])) + np.mean(2 - 2 * cos(p[:, 1], t[:, 0]))
    assert float(loss) == pytest.approx(want, rel=1e-5)
    before = [t.numpy().copy() for t, _ in weight_pairs(model.target_encoder, model.encoder)]
    model.fit(views, batch_size=8, epochs=1, verbose=0)
    for (t, o), t0 in zip(weight_pairs(model.target_encoder, model.encoder), before):
        np.testing.assert_allclose(t.numpy(), 0.9 * t0 + 0.1 * o.numpy(), rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(t0, o.numpy())
               for (_, o), t0 in zip(weight_pairs(model.target_encoder, model.encoder), before))


def test_simsiam_stops_the_gradient_through_its_targets():
    views, _ = _views(8)
    views = tf.constant(views)

    def grads(stop_gradient, constant_targets=None):
        model = _model(sct.models.SimSiamModel, augmenter=None, stop_gradient=stop_gradient)
        model.compile(optimizer="sgd")
        with tf.GradientTape() as tape:
            out = model.forward(views, training=True)
            if constant_targets is not None:
                out["targets"] = tf.constant(constant_targets)
            loss = model.contrastive_loss(None, None, out, None, True)
        return out, loss, [g.numpy() for g in tape.gradient(loss, model.encoder.trainable_weights)]

    out, loss, stopped = grads(True)
    p, t = out["predictions"].numpy(), out["targets"].numpy()
    cos = lambda a, b: np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    want = -(np.mean(cos(p[:, 0], t[:, 1])) + np.mean(cos(p[:, 1], t[:, 0]))) / 2
    assert float(loss) == pytest.approx(want, rel=1e-5)
    # Stop-gradient: the same gradient as with the targets given as constants.
    _, _, constant = grads(True, constant_targets=t)
    _, _, through = grads(False)
    for a, b in zip(stopped, constant):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    assert any(not np.allclose(a, b, atol=1e-6) for a, b in zip(stopped, through))


def test_collapse_monitor_reads_zero_for_a_collapsed_model():
    """SimSiam without stop-gradient collapses (the paper's figure 2): its
    output_std falls to ~0, while the healthy model's stays near 1/sqrt(dim).
    (A projector ending in BatchNorm, SimSiam's own, keeps each dimension's
    batch variance at 1, which hides the collapse from this monitor: the
    forced collapse uses BYOL's projector shape.)"""
    x, _ = _images(64)
    stds, losses = {}, {}
    for stop_gradient in (True, False):
        keras.utils.set_random_seed(0)
        model = sct.models.SimSiamModel(
            tiny.encoder(SHAPE), head=sct.heads.byol_projector(16, 32),
            augmenter=sct.augment.simclr(SHAPE, seed=0), stop_gradient=stop_gradient)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        history = model.fit(x, batch_size=16, epochs=5, verbose=0).history
        stds[stop_gradient], losses[stop_gradient] = history["output_std"][-1], history["loss"][-1]
    assert stds[False] < 0.05 and losses[False] < -0.98      # collapsed: every output alike
    assert 0.5 / np.sqrt(16) < stds[True] < 1.5 / np.sqrt(16)


def test_predictor_learning_rate_is_constant_and_resumes(tmp_path):
    """SimSiam's fixed predictor rate: one SGD step moves the predictor by
    its own constant rate and the rest by the schedule's; the predictor's
    optimizer state survives `.keras` and a resume after kill."""
    views, _ = _views(8)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=1, decay_rate=0.5)
    model = _model(sct.models.SimSiamModel, augmenter=None, predictor_learning_rate=0.05)
    model.compile(optimizer=keras.optimizers.SGD(schedule))
    assert type(model.predictor_optimizer) is keras.optimizers.SGD
    assert model.predictor_optimizer.name == f"{model.optimizer.name}_predictor"
    with tf.GradientTape() as tape:
        out = model.forward(tf.constant(views), training=True)
        loss = model.contrastive_loss(None, None, out, None, True)
    variables = model.trainable_variables
    grads = [g.numpy() for g in tape.gradient(loss, variables)]
    before = [v.numpy().copy() for v in variables]
    own = {id(v) for v in model.predictor.trainable_variables}
    model.fit(views, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for v, w, g in zip(variables, before, grads):
        rate = 0.05 if id(v) in own else 0.01
        np.testing.assert_allclose(v.numpy(), w - rate * g, rtol=1e-4, atol=1e-6, err_msg=v.path)
    assert int(model.optimizer.iterations) == int(model.predictor_optimizer.iterations) == 1

    x, _ = _images(32)

    def fresh():
        m = _model(sct.models.SimSiamModel, predictor_learning_rate=1e-3)
        m.compile(optimizer=keras.optimizers.Adam(sct.optimizers.warmup_cosine(1e-3, 8, 2)))
        return m

    resumed, _ = killed_then_resumed(fresh, x, str(tmp_path / "backup"), batch_size=16)
    # 4 epochs of 2 steps: the resumed fit went on from the killed one's state.
    assert int(resumed.predictor_optimizer.iterations) == int(resumed.optimizer.iterations) == 8
    path = str(tmp_path / "model.keras")
    resumed.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.predictor_learning_rate == 1e-3
    assert len(loaded.predictor_optimizer.variables) == len(resumed.predictor_optimizer.variables) > 1
    for a, b in zip(loaded.predictor_optimizer.variables, resumed.predictor_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    with pytest.raises(ValueError, match="predictor_learning_rate=0"):
        _model(sct.models.BYOLModel, predictor_learning_rate=0)
    with pytest.raises(TypeError, match="predictor_learning_rate='fast'"):
        _model(sct.models.SimSiamModel, predictor_learning_rate="fast")


def test_model_bad_input():
    for cls in (sct.models.BYOLModel, sct.models.SimSiamModel, sct.models.BarlowTwinsModel,
                sct.models.VICRegModel):
        with pytest.raises(ValueError, match="views=3"):
            _model(cls, views=3)
    with pytest.raises(ValueError, match="predictor="):
        sct.models.BYOLModel(tiny.encoder(SHAPE),
                             head=keras.layers.Dense(8))
    with pytest.raises(ValueError, match="momentum"):
        _model(sct.models.BYOLModel, momentum=1.5)
    with pytest.raises(ValueError, match="lambda_=-0.1"):
        _model(sct.models.BarlowTwinsModel, lambda_=-0.1)
    model = _model(sct.models.BarlowTwinsModel)
    model.compile(optimizer="adam")
    x, _ = _images(8)
    with pytest.raises(ValueError, match="at least 2 samples"):
        model.fit(x[:1], batch_size=1, epochs=1, verbose=0)
