"""Half a minute of SupCon pretraining on a Fashion-MNIST subset must make
the frozen encoder's linear probe clearly better than the same probe on the
randomly initialised encoder. The probe is the second stage's linear
classifier, trained on the frozen encoder's features computed once (what
`LinearClassifier` sees, without running the encoder every probe epoch).
Measured with this test's settings on a 2-core AMD EPYC (2026-12-04): 28.5%
-> 57.7% test top-1 on 2000 test images after 4 epochs over 2048 images (the
whole test 29 s); with seed 1 instead of 0 everywhere the random encoder
gives 44.6% and SupCon 67.8%."""

import keras
import numpy as np

import supcon_tf as sct


def _probe_accuracy(encoder, train, test):
    """Top-1 of a linear classifier on frozen features (Adam, 10 epochs)."""
    features = [sct.evaluation.embed(encoder, data, normalize=False) for data in (train, test)]
    labels = [np.concatenate([y.numpy() for _, y in data]) for data in (train, test)]
    keras.utils.set_random_seed(0)
    clf = keras.Sequential([keras.Input(features[0].shape[1:]), keras.layers.Dense(10)])
    clf.compile(optimizer=keras.optimizers.Adam(1e-2),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    clf.fit(features[0], labels[0], batch_size=256, epochs=10, verbose=0)
    return clf.evaluate(features[1], labels[1], verbose=0, return_dict=True)["accuracy"]


def test_supcon_pretraining_beats_random_encoder_by_10_points():
    keras.utils.set_random_seed(0)
    images = sct.data.load("fashion_mnist", "train[:2048]")
    train = sct.data.batches(images, 128, training=True, seed=0)
    probe_train = sct.data.batches(images, 512, training=False)
    test = sct.data.batches(sct.data.load("fashion_mnist", "test[:2000]"), 500, training=False)

    encoder = sct.encoders.resnet18((28, 28, 1), width=0.0625)
    random_top1 = _probe_accuracy(encoder, probe_train, test)

    augmenter = keras.Sequential([
        sct.augment.RandomResizedCrop(28, 28, scale=(0.5, 1.0), seed=0),
        keras.layers.RandomFlip("horizontal", seed=1)])
    model = sct.models.SupConModel(encoder, head=sct.heads.ProjectionHead(64),
                                   augmenter=augmenter)
    steps = 4 * int(train.cardinality())
    model.compile(optimizer=keras.optimizers.AdamW(
        sct.optimizers.warmup_cosine(3e-3, steps, warmup_steps=steps // 10)),
        loss=sct.losses.SupConLoss(temperature=0.1))
    history = model.fit(train, epochs=4, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]

    supcon_top1 = _probe_accuracy(encoder, probe_train, test)
    assert supcon_top1 >= random_top1 + 0.10, (random_top1, supcon_top1)
