import math

import keras
import numpy as np
import pytest

from supcon_tf import optimizers


def _lars_numpy(w, b, grads, lr, momentum, wd, eta):
    """SimCLR's LARS for one kernel `w` (adapted, decayed) and one bias `b` (neither)."""
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for gw, gb in grads:
        gw = gw + wd * w
        trust = eta * np.linalg.norm(w) / np.linalg.norm(gw)
        vw = momentum * vw + lr * trust * gw
        vb = momentum * vb + lr * gb
        w, b = w - vw, b - vb
    return w, b


def test_lars_matches_reference_update():
    rng = np.random.default_rng(0)
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    w0, b0 = layer.kernel.numpy().copy(), rng.normal(size=3).astype(np.float32)
    layer.bias.assign(b0)
    grads = [(rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32))
             for _ in range(3)]
    opt = optimizers.LARS(0.5, momentum=0.9, weight_decay=1e-2, eta=0.01)
    for gw, gb in grads:
        opt.apply_gradients([(gw, layer.kernel), (gb, layer.bias)])
    w, b = _lars_numpy(w0, b0, grads, 0.5, 0.9, 1e-2, 0.01)
    np.testing.assert_allclose(layer.kernel.numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), b, rtol=1e-5, atol=1e-6)


def test_lars_trains_a_model_and_round_trips():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(128, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    opt = optimizers.LARS(1.0, weight_decay=1e-4, exclude_from_adaptation=["dense_x"])
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = model.fit(x, y, epochs=15, batch_size=32, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    config = opt.get_config()
    clone = optimizers.LARS.from_config(config)
    assert clone.get_config()["weight_decay"] == 1e-4
    assert clone.get_config()["exclude_from_adaptation"] == ["dense_x"]
    with pytest.raises(ValueError, match="momentum=1"):
        optimizers.LARS(momentum=1)
    with pytest.raises(ValueError, match="eta=0"):
        optimizers.LARS(eta=0)


def test_warmup_cosine_schedule():
    schedule = optimizers.warmup_cosine(1.0, total_steps=110, warmup_steps=10, alpha=0.1)
    assert float(schedule(0)) == pytest.approx(0.0, abs=1e-6)
    assert float(schedule(5)) == pytest.approx(0.5, rel=1e-5)
    assert float(schedule(10)) == pytest.approx(1.0, rel=1e-5)
    assert float(schedule(60)) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-4)
    assert float(schedule(110)) == pytest.approx(0.1, rel=1e-4)
    no_warmup = optimizers.warmup_cosine(2.0, total_steps=100)
    assert float(no_warmup(0)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="warmup_steps=10, total_steps=10"):
        optimizers.warmup_cosine(1.0, total_steps=10, warmup_steps=10)


def test_learning_rate_scaling_rules():
    assert optimizers.scale_learning_rate(0.1, 1024) == pytest.approx(0.4)
    assert optimizers.scale_learning_rate(0.3, 1024, "sqrt") == pytest.approx(0.6)
    assert optimizers.scale_learning_rate(0.075, 4096, "sqrt", base_batch_size=1) == \
        pytest.approx(0.075 * math.sqrt(4096))
    assert optimizers.scale_learning_rate(0.1, 64, "none") == 0.1
    with pytest.raises(ValueError, match="rule='cube'"):
        optimizers.scale_learning_rate(0.1, 64, "cube")


def test_with_learning_rate_copies_the_settings_not_the_state():
    schedule = optimizers.warmup_cosine(2e-3, 100, 10)
    for original in (keras.optimizers.AdamW(schedule, weight_decay=1e-4, beta_2=0.99),
                     keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                     optimizers.LARS(schedule, weight_decay=1e-6, eta=0.002)):
        original.build([keras.Variable(np.ones((2, 2), "float32"))])
        copy = optimizers.with_learning_rate(original, 0.05)
        assert type(copy) is type(original) and not copy.built
        assert copy.name == f"{original.name}_copy"
        assert float(copy.learning_rate) == pytest.approx(0.05)
        want = {k: v for k, v in original.get_config().items()
                if k not in ("name", "learning_rate")}
        got = {k: v for k, v in copy.get_config().items() if k not in ("name", "learning_rate")}
        assert got == want
    with pytest.raises(ValueError, match="learning_rate=0"):
        optimizers.with_learning_rate(keras.optimizers.SGD(), 0)
    with pytest.raises(TypeError, match="learning_rate='1'"):
        optimizers.with_learning_rate(keras.optimizers.SGD(), "1")
    with pytest.raises(TypeError, match="optimizer='sgd'"):
        optimizers.with_learning_rate("sgd", 0.1)
    with pytest.raises(ValueError, match="LossScaleOptimizer"):
        optimizers.with_learning_rate(
            keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()), 0.1)
