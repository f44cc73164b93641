"""LoCo and Greedy InfoMax: the encoder's stages, and one step's updates
against the gradients of each unit's loss taken by hand (no gradient
between units; LoCo's shared stage gets both of its units'). Fit,
save/load, resume and two replicas: the contract test."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from tests.test_contract import _encoder

RNG = np.random.default_rng(5)


def test_resnet_stages_chain_to_the_encoder():
    encoder = sct.encoders.resnet18((16, 16, 1), width=0.0625)
    assert sct.models.stage_boundaries(encoder) == [
        "stage1_block2_out", "stage2_block2_out", "stage3_block2_out"]
    stages = sct.models.split_stages(encoder)
    x = RNG.uniform(0, 255, (2, 16, 16, 1)).astype("float32")
    h = x
    for stage in stages:
        h = stage(h)
    np.testing.assert_allclose(np.asarray(h), np.asarray(encoder(x)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="does not have"):
        sct.models.split_stages(encoder, ["stage9_block1_out"])
    with pytest.raises(ValueError, match="order"):
        sct.models.split_stages(encoder, ["stage2_block2_out", "stage1_block2_out"])


@pytest.mark.parametrize("overlap", [True, False])
def test_each_stage_moves_by_its_units_gradients_only(overlap):
    keras.utils.set_random_seed(1)
    head = sct.heads.ProjectionHead(6, hidden_dims=(8,), batch_norm=False)
    model = sct.models.LoCoModel(_encoder(), head=head, overlap=overlap, boundaries=(1, 2))
    model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=False)
    views = RNG.uniform(0, 255, (4, 2, 28, 28, 1)).astype("float32")
    flat = tf.reshape(views, [8, 28, 28, 1])
    before = [[w.numpy() for w in s.trainable_weights] for s in model.stages]
    # By hand: each unit's loss, its input cut from the stages below.
    expected = [[np.zeros_like(w) for w in ws] for ws in before]
    h = flat
    for unit, unit_head in zip(model.units, model.unit_heads):
        with tf.GradientTape() as tape:
            x = tf.stop_gradient(h)
            first = x = model.stages[unit[0]](x)
            for s in unit[1:]:
                x = model.stages[s](x)
            if x.shape.rank == 4:
                x = tf.reduce_mean(x, axis=[1, 2])
            loss = model.loss(None, tf.reshape(unit_head(x), [4, 2, -1]))
        grads = iter(tape.gradient(loss, [w for s in unit
                                          for w in model.stages[s].trainable_weights]))
        for s in unit:
            expected[s] = [e + next(grads).numpy() for e in expected[s]]
        h = first
    model.fit(views, epochs=1, batch_size=4, verbose=0)
    for s, stage in enumerate(model.stages):
        for w, w0, g in zip(stage.trainable_weights, before[s], expected[s]):
            np.testing.assert_allclose(w.numpy(), w0 - g, rtol=1e-4, atol=1e-5,
                                       err_msg=f"stage {s + 1}: {w.path}")
    # The units: LoCo's overlap by a stage, GIM's one stage each.
    assert model.units == ([(0, 1), (1, 2)] if overlap else [(0,), (1,), (2,)])
