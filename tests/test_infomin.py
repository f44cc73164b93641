"""InfoMin's learned views: the flow (invertible, volume-preserving, the
signals at initialisation), the adversarial step's directions, the
semi-supervised term, and a stage-two model on a stage-one flow. (The
augmentation recipe is in tests/test_augment.py; tests/test_contract.py
fits, saves, resumes and runs InfoMinModel on two replicas with the rest of
the family.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from tests import tiny

SHAPE = (28, 28, 1)


def _images(n=8, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n,) + SHAPE).astype("float32")


def _signals(x, kinds=("image", "gradient")):
    return np.concatenate([sct.encoders.ViewSignal(k)(x).numpy() for k in kinds], -1)


def test_flow_starts_at_the_signals_and_is_invertible_and_volume_preserving():
    x = _images(2)
    flow = sct.encoders.ViewFlow(("image", "gradient", "laplacian"), steps=5, hidden=4)
    np.testing.assert_allclose(flow(x).numpy(), _signals(x, flow.signals), atol=1e-3)
    rng = np.random.default_rng(1)
    for v in flow.trainable_variables:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    views = flow(x)
    assert np.abs(views.numpy() - _signals(x, flow.signals)).max() > 10
    np.testing.assert_allclose(flow.inverse(views).numpy(), _signals(x, flow.signals),
                               atol=2e-3)
    # The Jacobian of one pixel's map (signals -> views) has determinant 1.
    pixel = tf.constant(rng.uniform(0, 1, (1, 1, 1, 3)).astype("float32"))

    def pixel_map(s):
        y = s
        for k in range(flow.steps):
            target, shift = flow._shift(k, y)
            y = flow._set(y, target, y[..., target:target + 1] + shift)
        return y

    with tf.GradientTape() as tape:
        tape.watch(pixel)
        out = tf.reshape(pixel_map(pixel), [3])
    jacobian = tf.reshape(tape.jacobian(out, pixel), [3, 3])
    assert np.abs(jacobian.numpy() - np.eye(3)).max() > 0.1     # the map is not the identity
    assert float(tf.linalg.det(jacobian)) == pytest.approx(1.0, abs=1e-4)


def test_adversarial_step_takes_the_flow_up_the_loss_and_the_encoders_down():
    keras.utils.set_random_seed(0)
    model = sct.models.InfoMinModel(tiny.encoder(SHAPE, features=8),
                                    head=sct.heads.ProjectionHead(8, kind="linear"))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    views = tf.constant(np.stack([_images(8, 1), _images(8, 2)], 1))
    model(views)
    for v in model.flow.trainable_variables:      # off the zero start, so every weight moves
        v.assign(np.random.default_rng(3).normal(0, 0.5, v.shape).astype("float32"))
    flow_ids = {id(v) for v in model.flow.trainable_variables}
    with tf.GradientTape() as tape:
        loss = model.loss_object()(None, model.forward(views, True)["projections"])
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    before = [v.numpy().copy() for v in variables]
    model.train_on_batch(views)
    for v, g, b in zip(variables, grads, before):
        if g is None or "moving" in v.path:
            continue
        step = v.numpy() - b
        sign = 1.0 if id(v) in flow_ids else -1.0
        np.testing.assert_allclose(step, sign * 0.1 * g.numpy(), atol=1e-5,
                                   err_msg=v.path)
    # Not adversarial: the flow is frozen and the encoders still learn.
    frozen = sct.models.InfoMinModel(tiny.encoder(SHAPE, features=8), adversarial=False)
    frozen.compile(optimizer=keras.optimizers.SGD(0.1))
    assert not frozen.flow.trainable_variables
    flow_before = [v.numpy().copy() for v in frozen.flow.weights]
    frozen.train_on_batch(views)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(flow_before, frozen.flow.weights))


def test_semi_supervised_term_needs_classes_and_labels_and_trains_the_flow_down_it():
    with pytest.raises(ValueError, match="probe_classes"):
        sct.models.InfoMinModel(tiny.encoder(SHAPE), label_weight=1.0)
    with pytest.raises(ValueError, match="label_weight=-1"):
        sct.models.InfoMinModel(tiny.encoder(SHAPE), label_weight=-1)
    keras.utils.set_random_seed(0)
    model = sct.models.InfoMinModel(tiny.encoder(SHAPE, features=8), probe_classes=3,
                                    label_weight=2.0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    views = tf.constant(np.stack([_images(6, 1), _images(6, 2)], 1))
    labels = np.array([0, 1, 2, 0, 1, 2])
    model(views)
    flow_vars = model.flow.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        out = model.forward(views, True)
        task = model.view_loss(labels, out)
        contrast = model.loss_object()(None, out["projections"])
    g_task = tape.gradient(task, flow_vars)
    g_contrast = tape.gradient(contrast, flow_vars)
    before = [v.numpy().copy() for v in flow_vars]
    logs = model.train_on_batch(views, labels, return_dict=True)
    assert logs["view_cross_entropy"] > 0
    for v, b, gt, gc in zip(flow_vars, before, g_task, g_contrast):
        np.testing.assert_allclose(v.numpy() - b, -0.1 * (gt.numpy() - gc.numpy()), atol=1e-5)
    with pytest.raises(ValueError, match="needs labels"):
        model.train_on_batch(views)


def test_stage_two_reads_a_stage_one_flow_frozen(tmp_path):
    keras.utils.set_random_seed(0)
    stage_one = sct.models.InfoMinModel(tiny.encoder(SHAPE, features=8))
    stage_one.compile(optimizer=keras.optimizers.SGD(0.5))
    stage_one.fit(np.stack([_images(16, 1), _images(16, 2)], 1), epochs=1, batch_size=8,
                  verbose=0)
    path = str(tmp_path / "encoder.keras")
    stage_one.encoder.save(path)
    context = {"recipe": {}, "image_shape": SHAPE, "num_examples": 16}
    with pytest.raises(ValueError, match="adversarial=False"):
        sct.models.InfoMinModel.from_recipe(tiny.encoder(SHAPE), None, None, None, context,
                                            views_from=path)
    with pytest.raises(ValueError, match="encoder of an InfoMinModel"):
        other = str(tmp_path / "plain.keras")
        tiny.encoder(SHAPE).save(other)
        sct.models.InfoMinModel.from_recipe(tiny.encoder(SHAPE), None, None, None, context,
                                            views_from=other, adversarial=False)
    stage_two = sct.models.InfoMinModel.from_recipe(
        tiny.encoder(SHAPE, features=8), None, None, None, context, views_from=path,
        adversarial=False)
    x = _images(4, 5)
    np.testing.assert_allclose(stage_two.flow(x).numpy(), stage_one.flow(x).numpy(), atol=1e-4)
    assert not stage_two.flow.trainable_variables


def test_sweep_plot_reads_runs_and_writes_a_png(tmp_path):
    """examples/plot_sweep.py's `plot` on two run folders as the examples
    write them (loaded by path: its flags are its own)."""
    import importlib.util
    import json
    import math
    import os
    spec = importlib.util.spec_from_file_location(
        "_plot_sweep", os.path.join(os.path.dirname(__file__), "..", "examples", "plot_sweep.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runs = []
    for k, (loss, top1) in enumerate([(4.5, 0.81), (4.0, 0.84)]):
        run = tmp_path / f"run{k}"
        (run / "linear").mkdir(parents=True)
        (run / "pretrain.json").write_text(json.dumps(
            {"config": {"batch_size": 128}, "history": {"loss": [5.0, loss]}}))
        (run / "linear" / "linear_eval.json").write_text(json.dumps({"test_top1": top1}))
        runs.append(str(run))
    out = str(tmp_path / "sweep.png")
    series = module.parse(f"crop:{runs[1]}=0.5,{runs[0]}=0.2")
    table = module.plot([series], "crop lower bound", out)
    rows = table["crop"]
    assert rows[1][0] == 0.5 and rows[1][1] == pytest.approx(84.0)
    assert rows[0][2] == pytest.approx(math.log(255) - 4.5)
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not os.path.exists(out + ".tmp.png")
    with pytest.raises(ValueError, match="label:run=value"):
        module.parse("crop:runs/a")
