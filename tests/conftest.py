import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Distribution is tested on the CPU split into two logical devices. This must
# happen before TensorFlow initialises its devices, so it is done here, once.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

# tf.data's autotuning is off in the tests: each iterator runs an optimisation
# thread, and on the tests' short-lived iterators Python's garbage collector
# waited seconds at a time for those threads to end (tests/test_contract.py on
# two workers: 177 s with autotuning, 136 s without, 2-core AMD EPYC,
# 2026-12-06). The tests' pipelines are a few small batches: nothing to tune.
_dataset_iter = tf.data.Dataset.__iter__


def _iter_without_autotune(dataset):
    options = tf.data.Options()
    options.autotune.enabled = False
    return _dataset_iter(dataset.with_options(options))


tf.data.Dataset.__iter__ = _iter_without_autotune

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
