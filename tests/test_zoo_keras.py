"""`zoo.load_keras`: a zoo entry's network rebuilt from its recipe with the
SavedModel's weights, equal to what the SavedModel serves."""

import numpy as np
import pytest

import supcon_tf as sct

NAME = "fashion_mnist_resnet18_simclr"


def test_rebuilt_encoder_serves_what_the_savedmodel_serves():
    encoder = sct.zoo.load_keras(NAME)
    x = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
    features = np.asarray(encoder(x))
    np.testing.assert_allclose(features / np.linalg.norm(features, axis=1, keepdims=True),
                               np.asarray(sct.zoo.load(NAME)(x)), atol=1e-5)
    # Its layers are supcon_tf's: the feature map is there to read.
    assert sct.dense.feature_map(encoder).output_shape == (None, 4, 4, 64)


def test_a_recipe_that_does_not_rebuild_the_export_is_refused(monkeypatch):
    entry = sct.zoo.get(NAME)
    recipe = {**entry["recipe"], "encoder": {**entry["recipe"]["encoder"], "width": 0.0625}}
    monkeypatch.setattr(sct.zoo, "get", lambda name: {**entry, "recipe": recipe})
    with pytest.raises(ValueError, match="does not rebuild"):
        sct.zoo.load_keras(NAME)
