"""What PCL's clustering callback adds to an epoch, at the recipe's size.

    python benchmarks/pcl_clustering.py [--num_clusters 10,20,50] [--steps 30]

Builds `PCLModel` as `examples/pretrain.py --method pcl` does at the recipe
budget (ResNet-18 width 0.125, batch 128, the supcon recipe's augmentation,
queue 4096), then in one run:

- times `PCLClustering.on_epoch_begin` on the full Fashion-MNIST training set
  (60,000 images embedded by the momentum encoder, k-means with 3 restarts for
  each cluster count, the concentrations), twice: the first call includes
  tracing;
- times `--steps` training steps after a warm-up step, and scales them to an
  epoch (468 steps).

Prints the seconds and the callback's share of an epoch.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import supcon_tf as sct  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_clusters", default="10,20,50")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()
    clusters = tuple(int(k) for k in args.num_clusters.split(","))
    keras.utils.set_random_seed(0)
    train = sct.data.load("fashion_mnist", "train")
    n = int(train.cardinality())
    images = train.map(lambda image, label: image)
    model = sct.models.PCLModel(
        sct.encoders.resnet18((28, 28, 1), width=0.125), n, num_clusters=clusters,
        warmup_epochs=0, head=sct.heads.ProjectionHead(128),
        augmenter=sct.augment.supcon((28, 28, 1), seed=0), queue_size=4096, temperature=0.2)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    callback = sct.models.PCLClustering(images)
    callback.set_model(model)
    seconds = []
    for epoch in range(2):
        start = time.perf_counter()
        callback.on_epoch_begin(epoch)
        seconds.append(time.perf_counter() - start)
    data = sct.data.batches(sct.data.with_index(train.map(lambda image, label: image)),
                            args.batch_size, training=True, seed=0)
    steps_per_epoch = int(data.cardinality())
    model.fit(data.take(1), epochs=1, verbose=0)                     # trace
    start = time.perf_counter()
    model.fit(data.take(args.steps), epochs=1, verbose=0)
    step = (time.perf_counter() - start) / args.steps
    epoch = step * steps_per_epoch
    print(f"# {os.cpu_count()} CPUs; TensorFlow {tf.__version__}; {n} images; "
          f"clusters {clusters}")
    print("| clustering, first call s | clustering s | training step s | epoch s (x "
          f"{steps_per_epoch} steps) | clustering / epoch |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {seconds[0]:.1f} | {seconds[1]:.1f} | {step:.3f} | {epoch:.0f} | "
          f"{seconds[1] / epoch:.1%} |")
    print("# PCLClustering.seconds:", {k: round(v, 1) for k, v in callback.seconds.items()})
    assert np.isfinite(seconds).all()


if __name__ == "__main__":
    main()
