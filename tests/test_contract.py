"""The family's contract, for every registered method (`supcon_tf.methods`):
fit on images with an augmenter and with labels, `.keras` round trip, then
fit on pre-made views without labels, with an odd last batch; each option
either fits or is refused at construction with a message naming it; resume
after a kill; two replicas equal to one device.

Each method is built by its own `from_recipe` (what `examples/pretrain.py`
runs) on a small BatchNorm-free encoder, so one device and two replicas can
be compared exactly."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from tests.resume import killed_then_resumed

METHODS = sct.methods.names()
SHAPE = (28, 28, 1)
N = 18                    # batches of 8: two whole ones and an odd last batch of 2
# Small settings of each method (what the full recipes set larger).
SMALL = {"moco": {"queue_size": 16}, "supcon_queue": {"queue_size": 16},
         "pcl": {"queue_size": 16, "num_clusters": (2, 3), "warmup_epochs": 0,
                 "num_prototype_negatives": 2},
         "npid": {"num_negatives": 8}, "mice": {"queue_size": 16, "num_experts": 3},
         "loco": {"boundaries": (1, 2)}, "swav": {"num_prototypes": 6, "queue_size": 8,
                                                "freeze_prototypes_steps": 0}}
# Views per image the pipeline makes, where a method reads one crop.
# Methods whose pre-made views carry their crop boxes (`augment.CropViews`).
BOXED = {"pixpro"}
VIEWS = {"npid": 1, "cmc": 1, "looc": 4, "mice": 3, "dim": 1, "cpc": 1}
# The options a model of the family may take; each either fits or is refused.
OPTIONS = {"imix": {"imix": "mixup"}, "clae": {"adversarial_eps": 0.03},
           "mochi": {"mochi_n": 8, "mochi_s": 4, "mochi_s_prime": 2},
           "multi_crop": {"small_views": 2, "small_crop_size": 14}}


@pytest.fixture(scope="module")
def data():
    images, labels = next(iter(sct.data.load("fashion_mnist", f"train[:{N}]").batch(N)))
    return images.numpy(), labels.numpy()


def _encoder(seed=0, shape=SHAPE):
    """Small and BatchNorm-free; for images of any size (multi-crop) it pools.
    The convolutions' biases start above 0: on the black background a
    zero bias puts ReLU exactly at its kink, where XLA's gradient and
    TensorFlow's differ, and a method whose first step has no gradient (MiCE's empty
    queue) would keep it there."""
    keras.utils.set_random_seed(seed)
    any_size = shape[0] is None
    conv = {"strides": 2, "activation": "relu", "bias_initializer": keras.initializers.Constant(0.01)}
    return keras.Sequential([keras.Input(shape), keras.layers.Rescaling(1 / 255),
                             keras.layers.Conv2D(4, 3, **conv),
                             keras.layers.Conv2D(4, 3, **conv),
                             keras.layers.GlobalAveragePooling2D() if any_size
                             else keras.layers.Flatten(), keras.layers.Dense(8)])


def make(name, augmenter=True, probe=True, seed=0, synchronized_bn=False, jit_compile="auto",
         **options):
    """A compiled model of method `name` from its class's `from_recipe`."""
    cls = sct.methods.get(name)
    encoder = _encoder(seed, cls.encoder_shape(SHAPE, options))
    head = sct.heads.ProjectionHead(8, hidden_dims=(8,), synchronized_bn=synchronized_bn,
                                    **{"batch_norm": False, **cls.head_options})
    recipe = sct.methods.resolve({"method": name, "epochs": 3,
                                  "augment": {"recipe": "simclr"}})
    context = {"recipe": recipe, "image_shape": SHAPE, "num_examples": N,
               "synchronized_bn": synchronized_bn}
    aug = sct.augment.simclr(SHAPE, seed=seed) if augmenter else None
    model = cls.from_recipe(encoder, head=head, augmenter=aug,
                            probe_classes=10 if probe and cls.labels != "drop" else None,
                            context=context, **{**SMALL.get(name, {}), **options})
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit_compile)
    return model


def dataset(name, data, labels=True, views=None, batch=8, whole=False):
    """The method's input as its class declares it (index, labels), batched
    without dropping the odd last batch; `views` pre-made by the pipeline."""
    images, y = data
    ds = tf.data.Dataset.from_tensor_slices((images, y) if labels else images)
    cls = sct.methods.get(name)
    if cls.indexed:
        ds = sct.data.with_index(ds)
    ds = ds.batch(batch, drop_remainder=whole)
    if views:
        make_views = (sct.augment.CropViews(*SHAPE[:2], views=views, seed=3) if name in BOXED
                      else sct.augment.MultiView(sct.augment.simclr(SHAPE, seed=3), views))

        def premade(x, *y):
            if isinstance(x, dict):
                x = {**x, "image": make_views(tf.cast(x["image"], tf.float32), training=True)}
            else:
                x = make_views(tf.cast(x, tf.float32), training=True)
            return (x, *y)

        ds = ds.map(premade)
    return ds


@pytest.mark.parametrize("name", METHODS)
def test_fits_round_trips_and_fits_views_without_labels(name, data, tmp_path):
    model = make(name)
    with_labels = sct.methods.get(name).labels != "drop"
    history = model.fit(dataset(name, data, labels=with_labels), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and "output_std" in history
    if with_labels:
        assert "probe_accuracy" in history
    # `.keras` round trip: config, loss, weights, outputs and optimizer state.
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    # (Tuples come back as lists.)
    assert json.dumps(loaded.get_config(), sort_keys=True, default=str) == json.dumps(
        model.get_config(), sort_keys=True, default=str)
    assert json.dumps(keras.losses.serialize(loaded.loss), sort_keys=True, default=str) == \
        json.dumps(keras.losses.serialize(model.loss), sort_keys=True, default=str)
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    images = tf.cast(data[0][:4], tf.float32)
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    # The loaded model trains on from where it was, here without labels
    # (every method trains label-free; SupCon is then SimCLR) on views made
    # by the input pipeline, [batch, views, H, W, C], which pass the model's
    # augmenter by.
    steps = []
    count = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b))
    views = dataset(name, data, labels=False, views=VIEWS.get(name, 2))
    history = loaded.fit(views, epochs=1, verbose=0, callbacks=[count]).history
    assert np.isfinite(history["loss"][0]) and "probe_accuracy" not in history
    # Every batch trained: the odd last one too, or it is left out (with a
    # warning) where the method needs whole batches (shuffle-BN groups).
    assert len(steps) == (2 if getattr(loaded, "full_batches_only", False) else 3)


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("name", METHODS)
def test_each_option_fits_or_is_refused_by_name(name, option, data):
    args = OPTIONS[option]
    try:
        # Without XLA (its compile is most of these tests' time): the first
        # test fits every method with it.
        model = make(name, probe=False, jit_compile=False, **args)
    except (TypeError, ValueError) as err:
        words = {"imix": "imix", "clae": "adversarial", "mochi": "mochi",
                 "multi_crop": "small_views"}[option]
        assert words in str(err).lower() or "unexpected keyword" in str(err), str(err)
        return
    history = model.fit(dataset(name, data), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


@pytest.mark.parametrize("name", METHODS)
def test_resumes_after_a_kill_from_its_backup(name, data, tmp_path):
    callbacks = ()
    if name == "pcl":
        callbacks = (sct.models.PCLClustering(data[0]),)
    elif name == "spcl":
        callbacks = (sct.models.SpCLClustering(data[0], k1=6, k2=2),)
    killed_then_resumed(lambda: make(name, jit_compile=False), dataset(name, data),
                        str(tmp_path / "backup"),
                        epochs=2, kill_after=1, callbacks=callbacks)


@pytest.mark.parametrize("name", METHODS)
def test_two_replicas_equal_one_device(name, data, strategy):
    """The same model and global batches (views pre-made, so nothing random
    differs) on one device and on two replicas: the same losses and every
    weight (queues, banks, targets, prototypes) equal after two steps."""
    ds = dataset(name, data, views=VIEWS.get(name, 2), whole=True).take(2).cache()
    list(ds)                                       # the same views for both runs
    results = []
    for scope in (None, strategy):
        with (scope.scope() if scope else tf.device("/cpu:0")):
            # (SimSiam's projector and BYOL's and SimSiam's predictors hold
            # BatchNorm: synchronised, it normalises over the global batch as
            # one device does.)
            # Without XLA on both (the first test fits every method with it):
            # the comparison is of the replicas; XLA's compile added a fifth
            # to this test's time.
            model = make(name, augmenter=False, synchronized_bn=True, jit_compile=False)
        history = model.fit(ds, epochs=1, verbose=0).history
        results.append((history, model))
    (one, m1), (two, m2) = results
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-3, atol=1e-6)
    for a, b in zip(m2.weights, m1.weights):
        np.testing.assert_allclose(np.asarray(a.numpy(), "float64"),
                                   np.asarray(b.numpy(), "float64"), rtol=1e-3, atol=1e-4,
                                   err_msg=a.path)
