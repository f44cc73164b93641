"""LooC: the loss against a loop reference of the paper's definition, the
leave-one-out views (each key shares its family's draw with the query and
nothing else), LooC++'s encoder and what LooCModel refuses; the rotation
task. (tests/test_contract.py fits, saves, resumes and runs it on two
replicas with the rest of the family.)"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from tests import tiny
from tests.reference import finite_differences, looc_reference

SHAPE = (28, 28, 1)


@pytest.mark.parametrize("spaces", [2, 3, 4])
def test_loss_matches_the_loop_reference(spaces):
    z = np.random.default_rng(spaces).normal(size=(5, spaces + 1, spaces, 6)).astype("float32")
    got = sct.losses.looc_loss(z, temperature=0.3)
    np.testing.assert_allclose(got.numpy(), looc_reference(z, 0.3), rtol=1e-5)
    loss = sct.losses.LooCLoss(temperature=0.3)
    assert float(loss(None, z)) == pytest.approx(looc_reference(z, 0.3).mean(), rel=1e-5)


def test_gradient_matches_finite_differences_and_replicas_contrast_the_global_batch(strategy):
    z = np.random.default_rng(0).normal(size=(3, 3, 2, 3))
    var = tf.Variable(z.astype("float32"))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(sct.losses.looc_loss(var, temperature=0.5))
    expected = finite_differences(lambda x: looc_reference(x, 0.5).sum(), z)
    np.testing.assert_allclose(tape.gradient(total, var).numpy(), expected, atol=2e-3)
    z = np.random.default_rng(1).normal(size=(8, 4, 3, 4)).astype("float32")
    ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(z).batch(8))
    per_replica = strategy.run(sct.losses.looc_loss, args=(next(iter(ds)),))
    got = np.concatenate([v.numpy() for v in strategy.experimental_local_results(per_replica)])
    np.testing.assert_allclose(got, looc_reference(z, 0.2), rtol=1e-4)


def test_loss_needs_a_query_and_a_key_per_space():
    with pytest.raises(ValueError, match=re.escape("Received: y_pred.shape=(4, 3, 3, 8)")):
        sct.losses.looc_loss(np.ones((4, 3, 3, 8), "float32"))
    with pytest.raises(ValueError, match="Received: temperature=0"):
        sct.losses.LooCLoss(temperature=0)


@pytest.mark.parametrize("family", ["rotation", "color"])
def test_each_key_shares_its_family_draw_with_the_query_only(family):
    keras.utils.set_random_seed(0)
    model = sct.models.LooCModel(tiny.encoder(SHAPE), families=(family,), seed=3)
    images = np.random.default_rng(0).uniform(0, 255, (64, 1) + SHAPE).astype("float32")
    views = model.make_views(np.repeat(images, 3, axis=1)).numpy()      # q, k_0, k_family
    assert views.shape == (64, 3) + SHAPE
    same = lambda a, b: np.all(np.isclose(views[:, a], views[:, b], atol=1e-3), axis=(1, 2, 3))
    assert same(0, 2).all()                       # the family's key: the query's draw
    # k_0 draws its own (a quarter turn equal by chance 1 in 4; colour p 0.8
    # so both untouched about 1 in 25).
    assert same(0, 1).mean() < (0.45 if family == "rotation" else 0.2)


def test_two_families_and_looc_plus_plus():
    keras.utils.set_random_seed(0)
    model = sct.models.LooCModel(tiny.encoder(SHAPE, features=16), seed=1,
                                 head=sct.heads.ProjectionHead(8, hidden_dims=(8,)))
    image = np.random.default_rng(1).uniform(0, 255, (32, 1) + SHAPE).astype("float32")
    views = model.make_views(np.repeat(image, 4, axis=1)).numpy()       # q, k_0, k_rot, k_col
    # k_rotation shares the query's turn and k_color does not: the turn that
    # brings a view back to the image is the one its pixels correlate with
    # best (colour distortion is monotone per image).
    def turns(v):
        flat = image[:, 0].reshape(32, -1)
        corr = [[np.corrcoef(a, b)[0, 1] for a, b in zip(flat, sct.augment.rotate90(
            v, np.full(32, -k)).numpy().reshape(32, -1))] for k in range(4)]
        return np.argmax(corr, axis=0)

    assert (turns(views[:, 0]) == turns(views[:, 2])).all()
    assert (turns(views[:, 0]) != turns(views[:, 3])).mean() > 0.5
    model(views)
    out = model.concat_encoder()(image[:, 0])
    assert out.shape == (32, 24)                                  # 3 spaces x 8
    assert list(model.extra_encoders()) == ["encoder_concat"]


@pytest.mark.parametrize("kwargs,message", [
    ({"families": ("texture",)}, "families=('texture',)"),
    ({"families": ()}, "families=()"),
    ({"views": 2}, "reads 4 views per image (a query and 3 keys). Received: views=2"),
    ({"imix": "mixup"}, "imix='mixup'"),
])
def test_model_refuses(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sct.models.LooCModel(tiny.encoder(SHAPE), **kwargs)


def test_rotation_task_is_deterministic_and_balanced():
    images = np.random.default_rng(0).uniform(0, 255, (8, 5, 5, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(8)))
    pairs = list(sct.data.rotation_task(ds).as_numpy_iterator())
    assert [int(k) for _, k in pairs] == [0, 1, 2, 3, 0, 1, 2, 3]
    for i, (image, k) in enumerate(pairs):
        np.testing.assert_array_equal(image[..., 0], np.rot90(images[i, ..., 0], k))
    with pytest.raises(ValueError, match="square images"):
        sct.data.rotation_task(tf.data.Dataset.from_tensor_slices(
            (np.zeros((2, 4, 5, 1)), np.zeros(2))))
