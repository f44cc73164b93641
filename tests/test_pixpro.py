"""PixPro: the positive pairs' mask and the loss against loop translations
of the official code, the propagation module, views that keep their boxes,
and the model's refusals. (Fit, save/load, resume and two replicas: the
contract test.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from tests import reference

L = sct.losses
RNG = np.random.default_rng(3)


def _boxes(n, flip):
    top, left = RNG.uniform(0, 0.5, (2, n))
    h, w = RNG.uniform(0.3, 0.5, (2, n))
    boxes = np.stack([top, left, top + h, left + w], 1)
    boxes[flip] = boxes[flip][:, [0, 3, 2, 1]]
    return boxes.astype("float32")


@pytest.mark.parametrize("grid", [(3, 3), (2, 4)])
def test_mask_equals_the_official_get_mask(grid):
    a, b = _boxes(6, [1, 4]), _boxes(6, [1, 2, 5])
    mask = L.pixel_positive_mask(a, b, grid, threshold=0.7)
    want = reference.pixpro_mask_reference(a, b, *grid, threshold=0.7)
    np.testing.assert_array_equal(np.asarray(mask), want)
    assert 0 < want.sum() < want.size               # some pairs in, some out
    # The mask of the other direction is the transpose.
    np.testing.assert_array_equal(np.asarray(L.pixel_positive_mask(b, a, grid)),
                                  np.transpose(want, (0, 2, 1)))


def test_identical_views_pair_each_location_with_itself_and_flips_mirror_it():
    box = np.array([[0.0, 0.0, 1.0, 1.0]], "float32")
    same = np.asarray(L.pixel_positive_mask(box, box, (3, 3), threshold=0.5))[0]
    np.testing.assert_array_equal(same, np.eye(9))
    flipped = np.asarray(L.pixel_positive_mask(box, box[:, [0, 3, 2, 1]], (3, 3),
                                               threshold=0.5))[0]
    mirror = np.zeros((9, 9))
    for i in range(3):
        for j in range(3):
            mirror[i * 3 + j, i * 3 + 2 - j] = 1
    np.testing.assert_array_equal(flipped, mirror)


def test_loss_equals_the_official_regression_loss_and_is_zero_without_positives():
    t, p = RNG.normal(size=(4, 6, 5)), RNG.normal(size=(4, 6, 5))
    mask = (RNG.random((4, 6, 6)) < 0.3).astype("float32")
    mask[2] = 0.0
    got = np.asarray(L.pixpro_loss(t, p, mask))
    np.testing.assert_allclose(got, reference.pixpro_reference(t, p, mask), rtol=1e-5,
                               atol=1e-6)
    assert got[2] == 0.0
    # Predictions equal to their positive targets: the floor, -2.
    same = np.broadcast_to(np.eye(6, dtype="float32"), (1, 6, 6))
    np.testing.assert_allclose(np.asarray(L.pixpro_loss(t[:1], t[:1], same)), [-2.0],
                               rtol=1e-5)
    loss = L.PixProLoss()
    np.testing.assert_allclose(float(loss(t, p, positives=mask)), got.mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="positives="):
        loss(t, p)


@pytest.mark.parametrize("layers", [0, 1])
def test_propagation_equals_the_official_featprop(layers):
    ppm = sct.heads.PixelPropagation(gamma=2.0, transform_layers=layers)
    x = RNG.normal(size=(2, 5, 4)).astype("float32")
    got = np.asarray(ppm(x))
    values = x if layers == 0 else np.asarray(ppm.transform[0](x))
    np.testing.assert_allclose(got, reference.pixel_propagation_reference(x, values),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="transform_layers"):
        sct.heads.PixelPropagation(transform_layers=3)


def test_views_are_the_crops_of_their_boxes():
    images = RNG.uniform(0, 255, (5, 12, 12, 1)).astype("float32")
    out = sct.augment.CropViews(10, 10, views=2, scale=(0.3, 1.0), seed=4)(images)
    views, boxes = out["views"].numpy(), out["boxes"].numpy()
    assert views.shape == (5, 2, 10, 10, 1) and boxes.shape == (5, 2, 4)
    flipped = boxes[..., 1] > boxes[..., 3]
    assert flipped.any() and (~flipped).any()
    for v in range(2):
        plain = np.where(flipped[:, v, None], boxes[:, v][:, [0, 3, 2, 1]], boxes[:, v])
        crops = sct.augment.crop_and_resize(images, plain, (10, 10)).numpy()
        crops = np.where(flipped[:, v, None, None, None], crops[:, :, ::-1], crops)
        np.testing.assert_allclose(views[:, v], crops, atol=1e-3)


def test_geometry_other_than_crop_and_flip_is_refused_by_name():
    with pytest.raises(ValueError, match="RandAugment"):
        sct.augment.split_geometry(sct.augment.infomin((28, 28, 1)))
    spec = {"recipe": "simclr", "rotate90": True}
    with pytest.raises(ValueError, match="RandomRotate90"):
        sct.augment.split_geometry(sct.augment.from_spec(spec, (28, 28, 1)))
    crop, flip, rest = sct.augment.split_geometry(sct.augment.simclr((28, 28, 1)))
    assert crop.scale == (0.08, 1.0) and flip and rest is not None


def test_model_refuses_views_without_boxes():
    encoder = sct.encoders.resnet18((None, None, 1), width=0.0625)
    model = sct.models.PixProModel(encoder, head=sct.heads.ProjectionHead(
        8, hidden_dims=(16,), normalize=False), view_size=(28, 28))
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="boxes"):
        model.make_views(tf.zeros((2, 2, 28, 28, 1)))
    with pytest.raises(ValueError, match="PixProLoss"):
        model.compile(optimizer="sgd", loss=L.SupConLoss())
    with pytest.raises(ValueError, match="imix"):
        sct.models.PixProModel(encoder, imix="mixup", view_size=(28, 28))
    assert keras.ops.shape(model(tf.zeros((3, 28, 28, 1)))) == (3, 8)
