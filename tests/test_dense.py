"""The dense downstream task: masks, mean IoU, the feature map and the probe."""

import warnings

import numpy as np
import pytest

import supcon_tf as sct


def test_masks_label_the_bright_pixels_with_the_class():
    images = np.zeros((2, 4, 4, 1), np.uint8)
    images[0, 1:3, 1:3] = 200
    images[1, 0, :] = 33
    images[1, 3, :] = 32                      # at the threshold: background
    masks = sct.dense.segmentation_masks(images, np.array([4, 0]))
    assert masks.dtype == np.int32 and masks.shape == (2, 4, 4)
    assert masks[0, 1, 1] == 5 and masks[0].sum() == 4 * 5
    assert (masks[1, 0] == 1).all() and (masks[1, 1:] == 0).all()
    with pytest.raises(ValueError, match="one label each"):
        sct.dense.segmentation_masks(images, np.array([1]))


def test_mean_iou_equals_jaccard_per_class():
    from sklearn.metrics import jaccard_score
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(6, 5, 5))
    predictions = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, 4, labels.shape))
    miou, iou = sct.dense.mean_iou(labels, predictions, 5)      # class 4 occurs nowhere
    want = jaccard_score(labels.reshape(-1), predictions.reshape(-1), average=None,
                         labels=[0, 1, 2, 3])
    np.testing.assert_allclose(iou[:4], want)
    assert np.isnan(iou[4]) and miou == pytest.approx(want.mean())


def test_feature_map_and_probe_on_real_masks():
    """The map before the pooling layer, sharing the encoder's weights; the
    probe on a random encoder's map beats both trivial answers (all
    background, and every foreground pixel one class) on real masks."""
    import keras
    keras.utils.set_random_seed(0)
    encoder = sct.encoders.resnet18((28, 28, 1), width=0.0625)
    fmap = sct.dense.feature_map(encoder)
    assert tuple(fmap.outputs[0].shape[1:]) == (4, 4, 32)
    assert fmap.get_layer("stem_conv") is encoder.get_layer("stem_conv")
    with warnings.catch_warnings():  # called on a batch as the encoder is, without a warning
        warnings.simplefilter("error")
        np.testing.assert_allclose(fmap(np.zeros((2, 28, 28, 1), "float32")).shape, (2, 4, 4, 32))
    with pytest.raises(ValueError, match="one global pooling layer"):
        sct.dense.feature_map(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))

    x, y = sct.data.load_arrays("fashion_mnist", "train[:1200]")
    xt, yt = sct.data.load_arrays("fashion_mnist", "test[:300]")
    m, mt = sct.dense.segmentation_masks(x, y), sct.dense.segmentation_masks(xt, yt)
    result = sct.dense.dense_probe(encoder, x, m, xt, mt, 11, epochs=10, batch_size=64)
    all_background = sct.dense.mean_iou(mt, np.zeros_like(mt), 11)[0]
    one_class = sct.dense.mean_iou(mt, (mt > 0).astype(int), 11)[0]
    assert result["feature_shape"] == [4, 4, 32]
    assert result["miou"] > max(all_background, one_class) + 0.02, result
    assert result["pixel_accuracy"] > np.mean(mt == 0), result


def test_probe_reports_the_map_size_of_an_encoder_built_for_any_size():
    """An encoder whose input has no static height and width (DIM's recipe
    builds one) reports the map size of the images it was probed on."""
    import keras
    keras.utils.set_random_seed(0)
    images = keras.Input((None, None, 1))
    fmap = keras.layers.Conv2D(8, 3, strides=2, padding="same")(images)
    encoder = keras.Model(images, fmap)
    assert encoder.outputs[0].shape[1:3] == (None, None)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 28, 28, 1)).astype(np.uint8)
    masks = sct.dense.segmentation_masks(x, rng.integers(0, 3, 16))
    result = sct.dense.dense_probe(encoder, x, masks, x[:8], masks[:8], 4, epochs=1, batch_size=8)
    assert result["feature_shape"] == [14, 14, 8]
