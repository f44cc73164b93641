"""MoCo's costs, as ratios measured in one run.

    python benchmarks/moco.py [--batch 128] [--width 0.125] [--steps 20] [--rounds 3]
        [--queue 65536] [--dim 128] [--loss_batch 256] [--repeats 5]

- step: images per second of `MoCoModel.fit` against `SupConModel.fit` at the
  same batch and views (2 pre-made views of real Fashion-MNIST images, so
  augmentation costs nothing; CIFAR-stem ResNet-18 at --width,
  ProjectionHead(128), AdamW, `jit_compile=False` as examples/pretrain.py).
  MoCo variants: the default (one query view, key encoder forward only,
  `bn_groups=2`), `bn_groups=1`, and `symmetric=True`. Each is timed --rounds
  times interleaved (the machine is shared and noisy), median reported.
  Target: MoCo / SupCon step time <= 1.4.
- loss: the loss and its gradient with a queue of --queue x --dim against the
  matrix products it cannot avoid, timed in the same run: for MoCo's loss
  (--loss_batch queries) the logits `q @ queue.T` and the queries' gradient
  `softmax @ queue` (no gradient flows into the queue); for `supcon_loss` with
  the queue (--loss_batch samples x 2 views as anchors) the logits over batch
  and queue, the anchors' gradient over both, and the batch's own gradient.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import supcon_tf as sct  # noqa: E402
from loss import median_seconds  # noqa: E402  (benchmarks/loss.py)
from methods import premade_views, step_parser, time_fits  # noqa: E402  (benchmarks/methods.py)


def time_steps(args):
    ds = premade_views(args.batch, args.steps)

    def model(kind, **kwargs):
        keras.utils.set_random_seed(0)
        encoder = sct.encoders.resnet18((28, 28, 1), width=args.width)
        head = sct.heads.ProjectionHead(128)
        if kind == "supcon":
            m = sct.models.SupConModel(encoder, head=head)
            loss = sct.losses.SupConLoss(temperature=0.2)
        else:
            m = sct.models.MoCoModel(encoder, head=head, queue_size=4096, **kwargs)
            loss = None
        m.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=loss, jit_compile=False)
        return m

    variants = {"supcon (simclr)": model("supcon"), "moco": model("moco"),
                "moco bn_groups=1": model("moco", bn_groups=1),
                "moco symmetric": model("moco", symmetric=True)}
    print(f"\n## step: batch {args.batch} x 2 views, ResNet-18 w{args.width}, "
          f"{args.steps} steps x {args.rounds} rounds (median)")
    time_fits(variants, ds, args.batch, args.steps, args.rounds, "supcon (simclr)")


def time_losses(args):
    rng = np.random.default_rng(0)
    unit = lambda a: tf.math.l2_normalize(tf.constant(a.astype("float32")), axis=-1)  # noqa: E731
    b, k, d = args.loss_batch, args.queue, args.dim
    pairs = unit(rng.normal(size=(b, 2, d)))
    queue = unit(rng.normal(size=(k, d)))
    labels = tf.constant(rng.integers(0, 10, size=b))
    queue_labels = tf.constant(rng.integers(0, 10, size=k))

    def loss_and_grad(fn):
        @tf.function
        def run(z):
            with tf.GradientTape() as tape:
                tape.watch(z)
                value = tf.reduce_sum(fn(z))
            return value, tape.gradient(value, z)
        return lambda: [t.numpy() for t in run(pairs)]

    @tf.function
    def moco_floor(q):
        logits = tf.matmul(q, queue, transpose_b=True)
        return tf.reduce_sum(tf.matmul(logits, queue))

    @tf.function
    def supcon_floor(z):
        anchors = tf.reshape(z, [-1, d])
        contrast = tf.concat([anchors, queue], 0)
        logits = tf.matmul(anchors, contrast, transpose_b=True)
        d_anchor = tf.matmul(logits, contrast)
        d_batch = tf.matmul(logits[:, :2 * b], anchors, transpose_a=True)
        return tf.reduce_sum(d_anchor) + tf.reduce_sum(d_batch)

    rows = [
        ("moco_loss, no labels", loss_and_grad(
            lambda z: sct.losses.moco_loss(None, z, queue)),
         lambda: moco_floor(pairs[:, 0]).numpy()),
        ("moco_loss, labels", loss_and_grad(
            lambda z: sct.losses.moco_loss(labels, z, queue, queue_labels)),
         lambda: moco_floor(pairs[:, 0]).numpy()),
        ("supcon_loss + queue, labels", loss_and_grad(
            lambda z: sct.losses.supcon_loss(labels, z, queue=queue, queue_labels=queue_labels)),
         lambda: supcon_floor(pairs).numpy()),
        ("supcon_loss + queue, no labels", loss_and_grad(
            lambda z: sct.losses.supcon_loss(None, z, queue=queue)),
         lambda: supcon_floor(pairs).numpy()),
    ]
    print(f"\n## loss: queue {k} x {d}, batch {b} (x 2 views), median of {args.repeats}")
    print("| loss + gradient | seconds | its matmul floor (s) | ratio |")
    print("| --- | --- | --- | --- |")
    for name, fn, floor in rows:
        t, f = median_seconds(fn, args.repeats), median_seconds(floor, args.repeats)
        print(f"| {name} | {t:.4f} | {f:.4f} | {t / f:.2f} |", flush=True)


def main():
    parser = step_parser(__doc__)
    parser.add_argument("--queue", type=int, default=65536)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--loss_batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip_steps", action="store_true")
    args = parser.parse_args()
    print(f"# {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    time_losses(args)
    if not args.skip_steps:
        time_steps(args)


if __name__ == "__main__":
    main()
