"""Serialization helpers shared by the layers and models that hold other Keras
objects (augmenters, encoders, heads) as constructor arguments."""

import keras


def serialize(obj):
    """`keras.saving.serialize_keras_object`, passing None through."""
    return None if obj is None else keras.saving.serialize_keras_object(obj)


def from_config_with_objects(cls, config, keys):
    """`cls(**config)` after deserialising the nested Keras objects at `keys`."""
    config = dict(config)
    for key in keys:
        if config.get(key) is not None:
            config[key] = keras.saving.deserialize_keras_object(config[key])
    return cls(**config)
