"""Classifiers on an encoder: the linear probe of the two-stage recipe's second
stage (`LinearClassifier`) and the cross-entropy baseline
(`CrossEntropyClassifier`)."""

import keras
import tensorflow as tf

from supcon_tf import _backend
from supcon_tf._serialization import from_config_with_objects, serialize
from supcon_tf.encoders import as_encoder
from supcon_tf.models.base import build_if_known, check_int, feature_shape
from supcon_tf.models.fit_checks import quiet_dataset_shuffle

_PACKAGE = "supcon_tf"


class EncoderClassifier(keras.Model):
    """Optional augmentation, the encoder, and one Dense layer of logits."""

    _frozen = False

    def __init__(self, encoder, num_classes, augmenter=None, normalize_features=None,
                 **kwargs):
        _backend.require_tensorflow(f"supcon_tf.models.{type(self).__name__}")
        super().__init__(**kwargs)
        num_classes = check_int(num_classes, "num_classes", 2)
        self.encoder = as_encoder(encoder)
        self.num_classes = num_classes
        self.augmenter = augmenter
        if self._frozen:
            self.encoder.trainable = False
        self.normalize_features = (self._frozen if normalize_features is None
                                   else bool(normalize_features))
        self.feature_norm = (keras.layers.BatchNormalization(center=False, scale=False, momentum=0.9,
                                                             name="feature_norm")
                             if self.normalize_features else None)
        self.classifier = keras.layers.Dense(num_classes, name="logits")
        build_if_known(self)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, without Keras's warning that its default
        `shuffle=True` is ignored for a dataset (the pipeline shuffles)."""
        quiet_dataset_shuffle(x, kwargs)
        return super().fit(x, y, *args, **kwargs)

    def build(self, input_shape):
        features = self.features_shape(input_shape)
        if self.feature_norm is not None and not self.feature_norm.built:
            self.feature_norm.build(features)
        if not self.classifier.built:
            self.classifier.build(features)
        self.built = True

    def features_shape(self, input_shape):
        """The shape of the linear layer's input (building what leads to it)."""
        return feature_shape(self.encoder, input_shape)

    def features(self, x, training=False):
        """The linear layer's input: here the encoder's features."""
        features = self.encoder(x, training=training and not self._frozen)
        return tf.stop_gradient(features) if self._frozen else features

    def call(self, inputs, training=False):
        x = inputs
        if self.augmenter is not None and training:
            x = self.augmenter(x, training=True)
        features = self.features(x, training=training)
        if self.feature_norm is not None:
            features = self.feature_norm(features, training=training)
        return self.classifier(features)

    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder": serialize(self.encoder),
            "num_classes": self.num_classes,
            "normalize_features": self.normalize_features,
            "augmenter": serialize(self.augmenter),
        })
        return config

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config, ["encoder", "augmenter"])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LinearClassifier(EncoderClassifier):
    """Stage 2: a linear classifier on a frozen encoder.

    Sets `encoder.trainable = False` (the encoder object is shared, so it stays
    frozen elsewhere too until you set it back) and always calls it with
    `training=False`, so neither its weights nor its BatchNorm statistics move.
    Outputs logits; compile with
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.

    By default the features pass through a BatchNormalization without scale
    or offset before the Dense layer, as in MAE's linear probing: at inference
    it is a fixed affine map (the model stays linear in the features), and it
    makes the probe insensitive to the scale of the encoder's features.

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        num_classes: Number of classes, >= 2.
        augmenter: Optional augmentation applied while training. Defaults to None.
        normalize_features: Standardise features before the linear layer.
            Defaults to None (True here, False for `CrossEntropyClassifier`).

    Reference:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.
    """

    _frozen = True


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CrossEntropyClassifier(EncoderClassifier):
    """The cross-entropy baseline: the same encoder and a linear layer, trained
    end to end. Outputs logits.

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        num_classes: Number of classes, >= 2.
        augmenter: Optional augmentation applied while training. Defaults to None.
        normalize_features: Standardise features before the linear layer.
            Defaults to None (False).
    """


# The base's name in other modules of earlier versions.
_Classifier = EncoderClassifier
