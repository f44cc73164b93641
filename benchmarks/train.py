"""Training throughput: SupConModel.fit against a plain cross-entropy fit on
the same encoder, the input pipeline against what the trainer consumes, and
XLA (`jit_compile`) on and off, measured as ratios in one run.

    python benchmarks/train.py [--batch 256] [--views 2] [--width 0.125]
        [--steps 20] [--rounds 3]

Encoder: the zoo's architecture, CIFAR-stem ResNet-18 at --width (0.125 for
the fashion_mnist_resnet18_* entries), on real Fashion-MNIST images.

- trainer: images per second through the encoder in `fit`, one epoch of
  --steps steps timed from its first batch to its end (the data come from a
  cached in-memory dataset, so the input pipeline costs nothing):
  - `supcon`: `SupConModel` (ProjectionHead(128), online probe, SupConLoss,
    contrastive accuracy) on --batch images x --views views made beforehand;
  - `ce`: a plain Keras model `encoder -> Dense(10)` with sparse
    cross-entropy and accuracy, on batches of --batch x --views images, i.e.
    the same number of encoder images per step;
  - `supcon+augment`: `SupConModel` making its views itself with the
    `supcon` recipe inside the step, as examples/pretrain.py does;
  each with `jit_compile=False` and `True`. Every variant is timed --rounds
  times, interleaved (the machine is shared and noisy), median reported.
  Ratio = supcon / ce at the same `jit_compile` (target: >= 0.9).
- pipeline: view images per second of the tf.data pipeline alone
  (`data.load` decode, shuffle, batch, `MultiView(augment.supcon)` with
  parallel calls, prefetch) against the trainer's consumption (`supcon`,
  jit off): target >= 3x.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import supcon_tf as sct  # noqa: E402


class _EpochTimer(keras.callbacks.Callback):
    """Seconds from the first batch of the epoch to its end (excludes the
    iterator set-up that `fit` does before)."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def _encoder(width, seed):
    keras.utils.set_random_seed(seed)
    return sct.encoders.resnet18((28, 28, 1), width=width)


def _views_dataset(images, labels, batch, views, seed):
    """Cached batches of pre-made views `[batch, views, 28, 28, 1]`."""
    augment = sct.augment.MultiView(sct.augment.supcon((28, 28, 1), seed=seed), views)
    x = augment(tf.constant(images), training=True).numpy()
    return tf.data.Dataset.from_tensor_slices((x, labels)).batch(
        batch, drop_remainder=True).cache().repeat(), x


def build_variants(args):
    n = args.batch * args.steps
    train = sct.data.load("fashion_mnist", "train")
    images, labels = next(iter(train.batch(n)))
    images, labels = images.numpy(), labels.numpy()
    views_ds, x = _views_dataset(images, labels, args.batch, args.views, args.seed)
    flat_ds = tf.data.Dataset.from_tensor_slices(
        (x.reshape((-1,) + x.shape[2:]), np.repeat(labels, args.views))).batch(
        args.batch * args.views, drop_remainder=True).cache().repeat()
    images_ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(
        args.batch, drop_remainder=True).cache().repeat()

    def supcon(jit, augment=False):
        model = sct.models.SupConModel(
            _encoder(args.width, args.seed), head=sct.heads.ProjectionHead(128),
            augmenter=(sct.augment.supcon((28, 28, 1), seed=args.seed)
                       if augment else None),
            views=args.views, probe_classes=10)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                      loss=sct.losses.SupConLoss(temperature=0.1), jit_compile=jit)
        return model, images_ds if augment else views_ds

    def ce(jit):
        encoder = _encoder(args.width, args.seed)
        inputs = keras.Input((28, 28, 1))
        model = keras.Model(inputs, keras.layers.Dense(10)(encoder(inputs)))
        model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], jit_compile=jit)
        return model, flat_ds

    variants = {}
    for jit in (False, True):
        variants[("supcon", jit)] = supcon(jit)
        variants[("ce", jit)] = ce(jit)
        variants[("supcon+augment", jit)] = supcon(jit, augment=True)
    return variants


def time_variants(variants, args):
    images_per_step = args.batch * args.views
    for (name, jit), (model, ds) in variants.items():  # trace / compile
        start = time.perf_counter()
        model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
        print(f"# warm-up {name} jit_compile={jit}: {time.perf_counter() - start:.1f} s",
              flush=True)
    rates = {key: [] for key in variants}
    for _ in range(args.rounds):
        for key, (model, ds) in variants.items():
            timer = _EpochTimer()
            model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0,
                      callbacks=[timer])
            rates[key].append(images_per_step * args.steps / timer.seconds)
    return {key: float(np.median(values)) for key, values in rates.items()}


def pipeline_rate(args):
    """View images per second of decode + shuffle + batch + MultiView + prefetch."""
    augment = sct.augment.MultiView(sct.augment.supcon((28, 28, 1), seed=args.seed),
                                    args.views)
    ds = sct.data.batches(sct.data.load("fashion_mnist", "train"), args.batch,
                          training=True, seed=args.seed)
    ds = ds.map(lambda x, y: (augment(x, training=True), y),
                num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    it = iter(ds.repeat())
    for _ in range(5):
        next(it)
    batches = 4 * args.steps
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * args.batch * args.views / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs; "
          f"ResNet-18 width {args.width}, batch {args.batch} x {args.views} views, "
          f"{args.steps} steps x {args.rounds} rounds (median)", flush=True)
    rates = time_variants(build_variants(args), args)
    pipe = pipeline_rate(args)
    print("| trainer | jit_compile | encoder images/s | ratio to ce (same jit) |")
    print("| --- | --- | --- | --- |")
    for (name, jit), rate in rates.items():
        print(f"| {name} | {jit} | {rate:.0f} | {rate / rates[('ce', jit)]:.2f} |")
    for name in ("supcon", "ce", "supcon+augment"):
        print(f"# {name}: jit on / off = "
              f"{rates[(name, True)] / rates[(name, False)]:.2f}")
    consumed = rates[("supcon", False)]
    print(f"| pipeline (decode, shuffle, batch, MultiView(supcon), prefetch) | "
          f"{pipe:.0f} view images/s | {pipe / consumed:.1f}x what supcon consumes "
          f"({consumed:.0f}/s) |")


if __name__ == "__main__":
    main()
