"""Time of one forward + backward + SGD step of the CIFAR-stem ResNet-18 on
Fashion-MNIST-sized images, with and without XLA, next to the time of the
`supcon` augmentation recipe on the same batch. This sets how many epochs fit
in a training budget on this machine (docs/RESULTS.md).

    python benchmarks/encoder_step.py [--batch 512] [--widths 0.25,0.125]
        [--mixed_precision none,mixed_bfloat16] [--no_jit]

Each (width, dtype policy, jit) combination is timed in the same process, so
compare them as ratios: these machines are shared and noisy.
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

import supcon_tf as sct


def seconds_per_call(fn, repeats):
    fn()  # trace and warm up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--widths", default="0.25,0.125")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mixed_precision", default="none",
                        help="comma-separated Keras dtype policies to time, e.g. "
                             "none,mixed_bfloat16 (none = float32)")
    parser.add_argument("--no_jit", action="store_true",
                        help="skip the jit_compile=True timings")
    args = parser.parse_args()
    policies = args.mixed_precision.split(",")
    for policy in policies:
        if policy not in ("none", "mixed_bfloat16", "mixed_float16"):
            parser.error("--mixed_precision takes none, mixed_bfloat16 or mixed_float16. "
                         f"Received: {policy!r}")
    x = tf.constant(np.random.default_rng(0).integers(0, 256, (args.batch, 28, 28, 1)),
                    tf.float32)
    augmenter = sct.augment.supcon((28, 28, 1), seed=0)
    augment = tf.function(lambda: augmenter(x, training=True))
    print(f"augment ({args.batch} images): {seconds_per_call(augment, args.repeats):.3f} s")
    for width, policy, jit in ((float(w), p, j) for w in args.widths.split(",")
                               for p in policies
                               for j in ((False,) if args.no_jit else (False, True))):
        keras.mixed_precision.set_dtype_policy("float32" if policy == "none" else policy)
        encoder = sct.encoders.resnet18((28, 28, 1), width=width)
        optimizer = keras.optimizers.SGD(0.1)

        @tf.function(jit_compile=jit)
        def step():
            with tf.GradientTape() as tape:
                # The loss is taken in float32 whatever the policy, as SupConModel does.
                loss = tf.reduce_mean(tf.cast(encoder(x, training=True), tf.float32) ** 2)
            grads = tape.gradient(loss, encoder.trainable_variables)
            optimizer.apply_gradients(zip(grads, encoder.trainable_variables))
            return loss

        t = seconds_per_call(step, args.repeats)
        print(f"resnet18 width {width} {policy} jit_compile={jit}: {t:.3f} s per step "
              f"({args.batch / t:.0f} encoder images/s)")


if __name__ == "__main__":
    main()
