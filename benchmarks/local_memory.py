"""Peak memory of a training step: end-to-end SimCLR against LoCo and
Greedy InfoMax on the same encoder, batch and augmentation.

    python benchmarks/local_memory.py [--batch 128] [--width 0.125]
        [--methods simclr,loco,gim] [--jit false,true] [--steps 3]

Each (method, jit) runs in a process of its own: the recipe of
configs/fashion_mnist/<simclr|loco>.py (GIM: loco with overlap=False) on
ResNet-18, one step to trace, then TensorFlow's CPU allocator statistics
reset (`tf.config.experimental.reset_memory_stats`) and `--steps` steps;
the row is the allocator's peak during those steps above what it held
before them (`get_memory_info("CPU:0")`), i.e. what a step allocates at its
highest: activations, gradients, the optimizer's temporaries. Memory does
not depend on what else the machine runs, unlike time.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(method, jit, batch, width, steps):
    import numpy as np
    import tensorflow as tf

    import supcon_tf as sct

    config = "loco" if method in ("loco", "gim") else "simclr"
    recipe = sct.methods.recipe_from_file(os.path.join(ROOT, "configs", "fashion_mnist",
                                                       f"{config}.py"))
    recipe["encoder"]["width"] = width
    recipe["batch_size"] = batch
    if method == "gim":
        recipe["model"]["overlap"] = False
    model, loss = sct.methods.build(recipe, (28, 28, 1))
    model.compile(optimizer=sct.methods.optimizer(recipe, steps_per_epoch=steps + 1), loss=loss,
                  jit_compile=jit)
    images = sct.data.load("fashion_mnist", f"train[:{batch}]")
    x = np.stack([image.numpy() for image, _ in images]).astype("float32")
    model.fit(x, epochs=1, batch_size=batch, verbose=0)         # trace, build the optimizer
    held = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tf.config.experimental.reset_memory_stats("CPU:0")
    model.fit(np.concatenate([x] * steps), epochs=1, batch_size=batch, verbose=0)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    return {"method": method, "jit": jit, "batch": batch, "width": width,
            "step_peak_mb": (peak - held) / 2 ** 20, "held_mb": held / 2 ** 20}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--methods", default="simclr,loco,gim")
    parser.add_argument("--jit", default="false,true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, jit = args.one.split(":")
        print(json.dumps(measure(method, jit == "true", args.batch, args.width, args.steps)))
        return
    rows = []
    for jit in args.jit.split(","):
        for method in args.methods.split(","):
            out = subprocess.run(
                [sys.executable, __file__, "--one", f"{method}:{jit}", "--batch",
                 str(args.batch), "--width", str(args.width), "--steps", str(args.steps)],
                check=True, capture_output=True, text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| method | jit_compile | step peak (MB) | x end-to-end |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        base = next(r for r in rows if r["method"] == "simclr" and r["jit"] == row["jit"])
        print(f"| {row['method']} | {row['jit']} | {row['step_peak_mb']:.1f} | "
              f"{row['step_peak_mb'] / base['step_peak_mb']:.2f} |")


if __name__ == "__main__":
    main()
