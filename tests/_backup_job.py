"""A small fit with `supcon_tf.callbacks.BackupAndRestore`, for the kill tests:
`python -m tests._backup_job BACKUP EPOCHS [KILL_EPOCH]` kills itself (SIGKILL)
half-way through writing the backup of epoch KILL_EPOCH, leaving a truncated
weights file; it prints the epochs it ran and the final weights' checksum.
`run(backup, epochs)` is the same fit in the calling process."""

import os
import signal
import sys

import keras
import numpy as np

import supcon_tf as sct


def run(backup, epochs, kill_epoch=None):
    """Returns the line the job prints."""

    class Model(keras.Sequential):
        epochs_saved = 0

        def save_weights(self, filepath, overwrite=True, **kwargs):
            super().save_weights(filepath, overwrite=overwrite, **kwargs)
            Model.epochs_saved += 1
            if Model.epochs_saved == kill_epoch:
                size = os.path.getsize(filepath)
                with open(filepath, "r+b") as f:        # the write got half-way
                    f.truncate(size // 2)
                os.kill(os.getpid(), signal.SIGKILL)

    keras.utils.set_random_seed(0)
    model = Model([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    y = x[:, :3] * 2
    ran = []
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False, callbacks=[
        sct.callbacks.BackupAndRestore(backup, delete_checkpoint=False),
        keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: ran.append(e))])
    return (f"ran {ran} checksum {float(sum(np.abs(w).sum() for w in model.get_weights()))} "
            f"iterations {int(model.optimizer.iterations)}")


if __name__ == "__main__":
    print(run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None))
