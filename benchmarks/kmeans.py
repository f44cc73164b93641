"""supcon_tf.clustering.kmeans against scikit-learn's KMeans, in one run.

    python benchmarks/kmeans.py [--ks 10,100,1000] [--n 60000] [--dim 128]

The same float32 data for both: `--data random` (Gaussian `[n, dim]`,
L2-normalised) or `--data zoo` (the zoo's SimCLR encoder's embeddings of
the Fashion-MNIST training images). One k-means++ seeding each
(`restarts=1`, `n_init=1`), Lloyd's algorithm to convergence or 100
iterations (`max_iter=100`), Euclidean. Prints seconds and inertia.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

import supcon_tf as sct  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="10,100,1000")
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--data", choices=["random", "zoo"], default="random")
    args = parser.parse_args()
    if args.data == "zoo":
        x, _ = sct.data.load_idx_arrays("fashion_mnist", "train")
        data = sct.evaluation.embed(sct.zoo.load("fashion_mnist_resnet18_simclr"), x[:args.n])
    else:
        data = np.random.default_rng(0).normal(size=(args.n, args.dim)).astype("float32")
        data /= np.linalg.norm(data, axis=1, keepdims=True)
    data = np.asarray(data, np.float32)
    print(f"# {os.cpu_count()} CPUs; data {args.data} {data.shape}")
    print("| k | supcon_tf s | supcon_tf inertia | scikit-learn s | scikit-learn inertia |")
    print("| --- | --- | --- | --- | --- |")
    sct.clustering.kmeans(data[:1000], 5, restarts=1)                # trace
    for k in (int(v) for v in args.ks.split(",")):
        start = time.perf_counter()
        _, _, ours = sct.clustering.kmeans(data, k, restarts=1, iterations=100)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        reference = KMeans(k, n_init=1, max_iter=100, random_state=0).fit(data)
        theirs_s = time.perf_counter() - start
        print(f"| {k} | {ours_s:.1f} | {ours:.1f} | {theirs_s:.1f} | {reference.inertia_:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
