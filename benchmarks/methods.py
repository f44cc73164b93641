"""Step time of each method's `fit` against SimCLR's, in one run.

    python benchmarks/methods.py [--batch 128] [--width 0.125] [--steps 20] [--rounds 3]
                                 [--set methods|negatives|memory]

Same batch of 2 pre-made views of real Fashion-MNIST images (augmentation
costs nothing), CIFAR-stem ResNet-18 at --width, AdamW, `jit_compile=False`,
and each method as its config under configs/fashion_mnist builds it
(`supcon_tf.methods.build`: the heads, loss and options of the zoo's recipe,
the encoder at --width; 64 encoder features at w0.125), so a registered
method with a config joins the table (e.g. simclr: ProjectionHead(128, hidden
512), SupConLoss; moco: the same head, queue 4096; barlow, vicreg: projector
1024-1024-1024). The views carry no labels, so supcon's row trains as SimCLR
does (its own heads and temperature).

`--set negatives` times the better-negatives options instead,
each against its base: SimCLR with HardNegativeLoss (HCL), with i-Mix
(mixup), with CLAE (eps 0.03), and MoCo with MoCHi (N 1024, s 1024, s' 256).
`--set memory` times the methods with a memory of the dataset or prototypes
against SimCLR: NPID (a bank of `3 * batch` slots, 4096 negatives drawn from
it, NCE, one view), PCL (MoCo's queue 4096, clusterings of 10, 20 and 50 prototypes already
in place) and SwAV (100 prototypes, without and with a queue of 1024).

Each model is timed --rounds times, interleaved (the machine is shared and
noisy); the median images/s is reported, and its step time over SupCon's.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import supcon_tf as sct  # noqa: E402
from train import _EpochTimer  # noqa: E402  (benchmarks/train.py)


def premade_views(batch, steps):
    """A repeated dataset of `steps` batches of 2 augmented views."""
    train = sct.data.load("fashion_mnist", "train")
    images, _ = next(iter(train.batch(batch * steps)))
    views = sct.augment.MultiView(sct.augment.supcon((28, 28, 1), seed=0), 2)(
        tf.cast(images, tf.float32), training=True).numpy()
    return tf.data.Dataset.from_tensor_slices(views).batch(
        batch, drop_remainder=True).cache().repeat()


def time_fits(models, ds, batch, steps, rounds, base):
    """Median images/s of `fit` for each of `models` (a dict), interleaved;
    prints a markdown table with step time relative to `models[base]`. `ds`
    is one dataset for all, or a dict of a dataset per model."""
    data = ds if isinstance(ds, dict) else {name: ds for name in models}
    for name, m in models.items():
        m.fit(data[name], steps_per_epoch=3, epochs=1, verbose=0)   # trace
    rates = {name: [] for name in models}
    for _ in range(rounds):
        for name, m in models.items():
            timer = _EpochTimer()
            m.fit(data[name], steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
            rates[name].append(batch * steps / timer.seconds)
    reference = np.median(rates[base])
    print(f"| model | images/s | step time / {base} |")
    print("| --- | --- | --- |")
    for name, r in rates.items():
        print(f"| {name} | {np.median(r):.1f} | {reference / np.median(r):.2f} |", flush=True)


CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                       "fashion_mnist")


def methods(width):
    """Each method as its config under configs/fashion_mnist trains it (heads,
    loss, options; the encoder at `width`), fed pre-made views: every
    registered method whose recipe takes images alone, without an index."""
    models = {}
    for path in sorted(os.listdir(CONFIGS)):
        text = open(os.path.join(CONFIGS, path)).read()
        if "def get_config" not in text:
            continue
        recipe = sct.methods.resolve(sct.methods.recipe_from_file(os.path.join(CONFIGS, path)))
        cls = sct.methods.get(recipe["method"])
        if cls.indexed or recipe["loss"].get("name") == "HardNegativeLoss":
            continue                           # --set memory / --set negatives time these
        recipe["encoder"]["width"] = width
        keras.utils.set_random_seed(0)
        model, loss = sct.methods.build(recipe, (28, 28, 1))
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=loss, jit_compile=False)
        models[path[:-3]] = model
    return models


def negatives(width):
    """SimCLR and MoCo with the better-negatives options."""
    L = sct.heads

    def make(name):
        keras.utils.set_random_seed(0)
        encoder = sct.encoders.resnet18((28, 28, 1), width=width)
        head = L.ProjectionHead(128, (512,))
        options = {"simclr + i-mix": {"imix": "mixup"},
                   "simclr + clae": {"adversarial_eps": 0.03}}.get(name, {})
        if name.startswith("moco"):
            m = sct.models.MoCoModel(encoder, head=head, queue_size=4096,
                                     **({"mochi_n": 1024} if "mochi" in name else {}))
            loss = None
        else:
            m = sct.models.SupConModel(encoder, head=head, **options)
            loss = (sct.losses.HardNegativeLoss(temperature=0.2) if "hcl" in name
                    else sct.losses.SupConLoss(temperature=0.2))
        m.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=loss, jit_compile=False)
        return m

    names = ["simclr", "simclr + hcl", "simclr + i-mix", "simclr + clae", "moco",
             "moco + mochi"]
    return {name: make(name) for name in names}


def memory(width, batch, steps):
    """SimCLR, NPID, PCL and SwAV, with each model's inputs."""
    L = sct.heads
    views = premade_views(batch, steps)
    n = batch * steps
    index = tf.data.Dataset.range(n).batch(batch, drop_remainder=True).repeat()
    indexed = tf.data.Dataset.zip(views, index)
    # NPID checks that its first epoch (the 3 tracing steps) saw every slot.
    bank = 3 * batch
    npid_index = tf.data.Dataset.range(bank).batch(batch, drop_remainder=True).repeat()
    data = {"simclr": views, "swav": views, "swav + queue": views,
            "npid": tf.data.Dataset.zip(views, npid_index).map(
                lambda v, i: {"image": v[:, 0], "index": i}),
            "pcl": indexed.map(lambda v, i: {"image": v, "index": i})}

    def make(name):
        keras.utils.set_random_seed(0)
        encoder = sct.encoders.resnet18((28, 28, 1), width=width)
        loss = None
        if name == "simclr":
            m = sct.models.SupConModel(encoder, head=L.ProjectionHead(128, (512,)))
            loss = sct.losses.SupConLoss(temperature=0.2)
        elif name == "npid":
            m = sct.models.NPIDModel(encoder, bank, num_negatives=4096)
        elif name == "pcl":
            m = sct.models.PCLModel(encoder, n, head=L.ProjectionHead(128, (512,)),
                                    queue_size=4096)
            m.set_clusters(np.random.default_rng(0).normal(size=(n, 128)).astype("float32"))
        else:
            m = sct.models.SwAVModel(encoder, head=L.ProjectionHead(128, (512,)),
                                     num_prototypes=100,
                                     queue_size=1024 if "queue" in name else 0)
        m.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=loss, jit_compile=False)
        return m

    names = ["simclr", "npid", "pcl", "swav", "swav + queue"]
    return {name: make(name) for name in names}, data


def step_parser(doc):
    """The flags of a step-time benchmark: --batch, --width, --steps, --rounds."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    return parser


def main():
    parser = step_parser(__doc__)
    parser.add_argument("--set", choices=["methods", "negatives", "memory"], default="methods")
    args = parser.parse_args()
    print(f"# {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"\n## step: batch {args.batch} x 2 views, ResNet-18 w{args.width}, "
          f"{args.steps} steps x {args.rounds} rounds (median)")
    if args.set == "memory":
        models, data = memory(args.width, args.batch, args.steps)
        time_fits(models, data, args.batch, args.steps, args.rounds, "simclr")
        return
    if args.set == "negatives":
        models, base = negatives(args.width), "simclr"
    else:
        models, base = methods(args.width), "simclr"
    time_fits(models, premade_views(args.batch, args.steps), args.batch, args.steps,
              args.rounds, base)


if __name__ == "__main__":
    main()
