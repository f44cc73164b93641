"""A short SupConModel pretraining run used by tests/test_multi_worker.py.

    python tests/_multi_worker_job.py OUT.json        # one process, one device
    TF_CONFIG=... python tests/_multi_worker_job.py OUT.json   # one worker of many

The global batch is the same in both cases: pre-made views (no random
augmentation) from a seeded generator, batched with drop_remainder=True; under
MultiWorkerMirroredStrategy each worker feeds its share of every global batch
(DATA sharding). The encoder has synchronized BatchNorm, so the loss of the
global batch is the same as on one device. Writes the per-epoch history of
the chief (or the single process) to OUT.json.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import supcon_tf as sct  # noqa: E402

GLOBAL_BATCH = 16


def main(out_path):
    multi = bool(os.environ.get("TF_CONFIG"))
    strategy = sct.distribute.get_strategy("multi_worker" if multi else "none")
    rng = np.random.default_rng(0)
    views = rng.uniform(0, 1, size=(64, 2, 8, 8, 1)).astype("float32")
    labels = rng.integers(0, 4, size=64).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((views, labels)).batch(
        GLOBAL_BATCH, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)

    with strategy.scope():
        keras.utils.set_random_seed(0)
        encoder = keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3),
            keras.layers.BatchNormalization(synchronized=True),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
        ])
        model = sct.models.SupConModel(encoder, head=sct.heads.ProjectionHead(
            16, hidden_dims=(16,), synchronized_bn=True))
        model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(ds, epochs=2, verbose=0).history
    out_dir = sct.distribute.output_dir(os.path.dirname(out_path), strategy)
    with open(os.path.join(out_dir, os.path.basename(out_path)), "w") as f:
        json.dump({"replicas": strategy.num_replicas_in_sync,
                   "chief": sct.distribute.is_chief(strategy),
                   "history": {k: [float(v) for v in vs] for k, vs in history.items()}}, f)
    sct.distribute.cleanup_output_dir(out_dir, os.path.dirname(out_path))


if __name__ == "__main__":
    main(sys.argv[1])
