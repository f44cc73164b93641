import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Distribution is tested on the CPU split into two logical devices. This must
# happen before TensorFlow initialises its devices, so it is done here, once.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


import pytest  # noqa: E402

REPLICAS = 2


@pytest.fixture(scope="session")
def strategy():
    """One MirroredStrategy over the two logical CPUs for the whole session:
    two strategies in one process number their collective ops alike, and the
    second one's all-gathers then abort ("Collective instance ... expected
    type ..."), so every test module shares this one."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:REPLICAS]
    assert len(devices) == REPLICAS, devices
    return tf.distribute.MirroredStrategy(devices)


@pytest.fixture(scope="session")
def exported_encoder(tmp_path_factory):
    """`(encoder, SavedModel folder)`: a small encoder exported once per test
    process for the tests that pack, register and load zoo archives (each
    copies it; none changes it)."""
    import supcon_tf as sct
    from tests import tiny
    encoder = tiny.encoder((8, 8, 1))
    saved = sct.export.export_encoder(encoder, tmp_path_factory.mktemp("export") / "savedmodel")
    return encoder, saved
