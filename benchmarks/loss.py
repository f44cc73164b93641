"""Forward + backward time and peak memory of SupConLoss against the matrix
products it cannot avoid, measured in the same run.

    python benchmarks/loss.py [--sizes 1024,4096,8192,16384] [--dim 128] [--repeats 5]
        [--paths dense,blockwise] [--block_size 1024] [--options default,in,...]
    python benchmarks/loss.py --sizes 65536 --paths blockwise --repeats 1

For N rows (views x batch; 2 views, labels from 10 classes) and dim d:

- loss: `supcon_loss(labels, z, **option)` and its gradient with respect to
  z, in one `tf.function`, for each --options entry: `default` (the fused
  path), `in` (`variant="in"`), `one_positive` / `only_negatives`
  (`denominator`), `cap` / `cap4` (`positives_cap=2` / `4`), `one` (`contrast_mode="one"`),
  `mask` (an explicit `[B, B]` mask of the same classes), `multi_hot`
  (two-hot labels over 10 classes), `masked` (`fused=False`: the general path
  with the default options); each on the `dense` path (`block_size=None`,
  one block) and the `blockwise` one (`block_size` rows at a time: O(block x
  N) memory, one more product);
- floor: the three N x N x d products any implementation needs (one forward,
  `z @ z.T`; two backward, `G @ z` and `G.T @ z`), timed both as dense
  products and in `block_size`-row blocks in the same run; the floor is the
  faster of the two (at N = 65,536 only the blocks fit in memory);
- ratio = loss / floor;
- peak memory: the growth of the process's peak resident memory while the
  loss runs (its first call included), from the resident memory just before
  (Linux: the peak is reset first), each size and path in a fresh subprocess.

With `--backend jax` (`pip install "jax[cpu]"`), each option is also timed
on Keras's JAX backend, in a process of its own: the same `supcon_loss` (its
`keras.ops` code) and its gradient under `jax.jit`, against the same three
products under `jax.jit` (dense), printed beside the TensorFlow ratio of the
dense path; the last column divides the JAX time by the TensorFlow floor.

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


OPTIONS = {"default": {}, "masked": dict(fused=False), "in": dict(variant="in"),
           "one_positive": dict(denominator="one_positive"),
           "only_negatives": dict(denominator="only_negatives"),
           "cap": dict(positives_cap=2), "cap4": dict(positives_cap=4),
           "one": dict(contrast_mode="one"),
           "mask": {}, "multi_hot": {}}


def measure(n, dim, repeats, path, block_size, option="default"):
    """One size, path and option, in this process: returns a dict of the
    measurements (the floor only for option "floor")."""
    import numpy as np
    import tensorflow as tf

    from supcon_tf.losses import supcon_loss

    rng = np.random.default_rng(0)
    views = 2
    z = tf.constant(rng.normal(size=(n // views, views, dim)).astype("float32"))
    ids = rng.integers(0, 10, size=n // views)
    labels = tf.constant(ids)
    flat = tf.reshape(z, [n, dim])
    if option == "floor":
        return measure_floor(n, flat, repeats, block_size)
    options = dict(OPTIONS[option])
    options["block_size"] = block_size if path == "blockwise" else None
    if option == "mask":
        options["mask"] = tf.constant((ids[:, None] == ids[None, :]).astype("float32"))
        labels = None
    elif option == "multi_hot":
        hot = np.zeros((n // views, 10), "float32")
        hot[np.arange(n // views), ids] = 1
        hot[np.arange(n // views), (ids + 1) % 10] = 1
        labels = tf.constant(hot)
    if path == "dense" and n * n > 16384 * 16384:
        raise ValueError(f"the dense path is not chosen above 16384 rows (n={n})")

    @tf.function
    def loss_and_grad():
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = tf.reduce_mean(supcon_loss(labels, z, temperature=0.1, **options))
        return value, tape.gradient(value, z)

    before = reset_peak_rss()
    loss_s = median_seconds(lambda: loss_and_grad()[0].numpy(), repeats)
    return {"n": n, "dim": dim, "path": path, "option": option, "loss_s": loss_s,
            "peak_growth_mb": peak_rss_mb() - before}


def measure_jax(n, dim, repeats, option="default"):
    """The loss's `keras.ops` code on Keras's JAX backend (this process must
    run with KERAS_BACKEND=jax) and the dense floor, both under `jax.jit`."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from supcon_tf.losses import supcon_loss

    rng = np.random.default_rng(0)
    views = 2
    z = jnp.asarray(rng.normal(size=(n // views, views, dim)).astype("float32"))
    ids = rng.integers(0, 10, size=n // views)
    labels, options = jnp.asarray(ids), dict(OPTIONS[option])
    if option == "mask":
        options["mask"] = jnp.asarray((ids[:, None] == ids[None, :]).astype("float32"))
        labels = None
    elif option == "multi_hot":
        hot = np.zeros((n // views, 10), "float32")
        hot[np.arange(n // views), ids] = 1
        hot[np.arange(n // views), (ids + 1) % 10] = 1
        labels = jnp.asarray(hot)
    loss_and_grad = jax.jit(jax.value_and_grad(
        lambda z: jnp.mean(supcon_loss(labels, z, temperature=0.1, **options))))
    loss_s = median_seconds(lambda: loss_and_grad(z)[0].block_until_ready(), repeats)

    flat = z.reshape(n, dim)
    grad_rows = jnp.asarray(rng.normal(size=(n, n)).astype("float32") / n)

    @jax.jit
    def floor(flat, grad_rows):
        logits = flat @ flat.T
        return logits[0, 0] + (grad_rows @ flat)[0, 0] + (grad_rows.T @ flat)[0, 0]

    floor_s = median_seconds(lambda: floor(flat, grad_rows).block_until_ready(), repeats)
    return {"n": n, "option": option, "jax_loss_s": loss_s, "jax_floor_s": floor_s}


def measure_floor(n, flat, repeats, block_size):
    """The three products, dense (when N x N fits) and in row blocks."""
    import tensorflow as tf

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

    # An upstream gradient of the logits, made outside the timed function.
    grad_block = tf.random.stateless_normal([block_size, n], seed=[0, 1]) / n
    result = {"n": n, "blocks_s": median_seconds(lambda: floor_in_blocks(grad_block).numpy(),
                                                 repeats), "dense_s": None}
    if n <= 16384:
        grad_rows = tf.random.stateless_normal([n, n], seed=[0, 1]) / n
        result["dense_s"] = median_seconds(lambda: floor(grad_rows).numpy(), repeats)
    return result


def _run_one(n, args, path, option, backend="tensorflow"):
    proc = subprocess.run(
        [sys.executable, __file__, "--one", str(n), "--dim", str(args.dim),
         "--repeats", str(args.repeats), "--paths", path, "--options", option,
         "--block_size", str(args.block_size), "--backend", backend],
        capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": backend})
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["?"])[-1][:80]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,4096,8192,16384")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--paths", default="dense,blockwise")
    parser.add_argument("--block_size", type=int, default=1024)
    parser.add_argument("--options", default=",".join(OPTIONS))
    parser.add_argument("--backend", default="tensorflow",
                        help="tensorflow, or jax: the JAX column beside each option")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    paths, options = args.paths.split(","), args.options.split(",")
    if args.one is not None and args.backend == "jax":
        print(json.dumps(measure_jax(args.one, args.dim, args.repeats, options[0])))
        return
    if args.one is not None:
        print(json.dumps(measure(args.one, args.dim, args.repeats, paths[0],
                                 args.block_size, options[0])))
        return
    import tensorflow as tf
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, dim {args.dim}, "
          f"median of {args.repeats}, block_size {args.block_size}")
    jax = args.backend == "jax"
    print("| N | option | path | loss fwd+bwd (s) | floor (s) | ratio | "
          "peak memory growth (MB) |" + (" JAX loss (s) | JAX floor (s) | JAX ratio | "
                                         "JAX loss / floor (s) |" if jax else ""))
    print("| --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- | --- | --- |"
                                                          if jax else ""))
    for n in (int(s) for s in args.sizes.split(",")):
        floor = _run_one(n, args, "dense", "floor")
        if isinstance(floor, str):
            print(f"| {n} | floor | | failed: {floor} | | | |", flush=True)
            continue
        best = min(v for v in (floor["dense_s"], floor["blocks_s"]) if v is not None)
        kind = "blocks" if best == floor["blocks_s"] else "dense"
        dense = "n/a" if floor["dense_s"] is None else f"{floor['dense_s']:.3f}"
        print(f"| {n} | floor: dense {dense} s, in blocks {floor['blocks_s']:.3f} s | | | "
              f"{best:.3f} ({kind}) | 1.00 | |", flush=True)
        for option in options:
            for path in paths:
                r = _run_one(n, args, path, option)
                if isinstance(r, str):
                    print(f"| {n} | {option} | {path} | failed: {r} | | | |", flush=True)
                    continue
                row = (f"| {n} | {option} | {path} | {r['loss_s']:.3f} | {best:.3f} | "
                       f"{r['loss_s'] / best:.2f} | {r['peak_growth_mb']:.0f} |")
                if jax and path == "dense":
                    j = _run_one(n, args, path, option, "jax")
                    row += (f" failed: {j} | | | |" if isinstance(j, str) else
                            f" {j['jax_loss_s']:.3f} | {j['jax_floor_s']:.3f} | "
                            f"{j['jax_loss_s'] / j['jax_floor_s']:.2f} | "
                            f"{j['jax_loss_s'] / best:.2f} |")
                print(row, flush=True)


if __name__ == "__main__":
    main()
