"""Forward + backward time and peak memory of SupConLoss against the matrix
products it cannot avoid, measured in the same run.

    python benchmarks/loss.py [--sizes 1024,4096,8192,16384] [--dim 128] [--repeats 5]
        [--paths masked,dense,blockwise] [--block_size 1024]
    python benchmarks/loss.py --sizes 65536 --paths blockwise --repeats 1

For N rows (views x batch; 2 views, labels from 10 classes) and dim d:

- loss: `SupConLoss()(labels, z)` and its gradient with respect to z, in one
  `tf.function`, by one of the implementations:
  `masked` (`supcon_loss(..., fused=False)`, the general path with N x N
  masks), `dense` (the default fused path: one N x N buffer) or `blockwise`
  (`block_size` rows at a time: O(block x N) memory, one more product);
- floor: the three N x N x d products any implementation needs (one forward,
  `z @ z.T`; two backward, `G @ z` and `G.T @ z`), in one `tf.function`; for
  the blockwise path the same products done `block_size` rows at a time (the
  N x N operands of the plain floor do not fit in memory at N = 65,536);
- ratio = loss / floor (target of issue 6: <= 1.5 at N = 8192);
- peak memory: the growth of the process's peak resident memory while the
  loss runs (its first call included), from the resident memory just before
  (Linux: the peak is reset first), each size and path in a fresh subprocess.

Each timing is the median of --repeats calls after one warm-up call.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss():
    """On Linux, resets the peak resident memory to the current one (so an
    earlier, higher peak, e.g. while TensorFlow was imported, does not hide
    the loss's); returns the current resident memory in MB, or the peak
    so far where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f
                        if line.startswith("VmRSS:"))
    except OSError:
        return peak_rss_mb()


def median_seconds(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(n, dim, repeats, path, block_size):
    """One size and path, in this process: returns a dict of the measurements."""
    import numpy as np
    import tensorflow as tf

    from supcon_tf.losses import supcon_loss

    rng = np.random.default_rng(0)
    views = 2
    z = tf.constant(rng.normal(size=(n // views, views, dim)).astype("float32"))
    labels = tf.constant(rng.integers(0, 10, size=n // views))
    flat = tf.reshape(z, [n, dim])
    options = {"masked": dict(fused=False), "dense": dict(block_size=None),
               "blockwise": dict(block_size=block_size)}[path]
    if path == "dense" and n * n > 16384 * 16384:
        raise ValueError(f"the dense path is not chosen above 16384 rows (n={n})")

    @tf.function
    def loss_and_grad():
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = tf.reduce_mean(supcon_loss(labels, z, temperature=0.1, **options))
        return value, tape.gradient(value, z)

    @tf.function
    def floor(grad_rows):
        logits = tf.matmul(flat, flat, transpose_b=True)         # forward
        d_anchor = tf.matmul(grad_rows, flat)                     # backward, anchors
        d_contrast = tf.matmul(grad_rows, flat, transpose_a=True)  # backward, contrast
        return logits[0, 0] + d_anchor[0, 0] + d_contrast[0, 0]

    @tf.function
    def floor_in_blocks(grad_block):
        total = tf.zeros([])
        d_contrast = tf.zeros_like(flat)
        for start in range(0, n, block_size):
            rows = flat[start:start + block_size]
            logits = tf.matmul(rows, flat, transpose_b=True)
            d_anchor = tf.matmul(grad_block, flat)
            d_contrast += tf.matmul(grad_block, rows, transpose_a=True)
            total += logits[0, 0] + d_anchor[0, 0]
        return total + d_contrast[0, 0]

    # The loss first: its peak is then not hidden by the floor's N x N inputs.
    before = reset_peak_rss()
    loss_s = median_seconds(lambda: loss_and_grad()[0].numpy(), repeats)
    growth = peak_rss_mb() - before
    # An upstream gradient of the logits, made outside the timed function.
    if path == "blockwise":
        grad_block = tf.random.stateless_normal([block_size, n], seed=[0, 1]) / n
        floor_s = median_seconds(lambda: floor_in_blocks(grad_block).numpy(), repeats)
    else:
        grad_rows = tf.random.stateless_normal([n, n], seed=[0, 1]) / n
        floor_s = median_seconds(lambda: floor(grad_rows).numpy(), repeats)
    return {"n": n, "dim": dim, "path": path, "loss_s": loss_s, "floor_s": floor_s,
            "ratio": loss_s / floor_s, "peak_growth_mb": growth,
            "peak_rss_mb": peak_rss_mb()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,4096,8192,16384")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--paths", default="masked,dense,blockwise")
    parser.add_argument("--block_size", type=int, default=1024)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    paths = args.paths.split(",")
    if args.one is not None:
        print(json.dumps(measure(args.one, args.dim, args.repeats, paths[0],
                                 args.block_size)))
        return
    import tensorflow as tf
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, dim {args.dim}, "
          f"median of {args.repeats}, block_size {args.block_size}")
    print("| N | path | loss fwd+bwd (s) | floor: 3 matmuls (s) | ratio | "
          "peak memory growth (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in (int(s) for s in args.sizes.split(",")):
        for path in paths:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(n), "--dim", str(args.dim),
                 "--repeats", str(args.repeats), "--paths", path,
                 "--block_size", str(args.block_size)],
                capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"| {n} | {path} | failed: {tail[:80]} | | | |", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            floor = "blocks" if path == "blockwise" else "dense"
            print(f"| {n} | {path} | {r['loss_s']:.3f} | {r['floor_s']:.3f} ({floor}) | "
                  f"{r['ratio']:.2f} | {r['peak_growth_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
