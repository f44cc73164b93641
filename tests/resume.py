"""Kill a training run at an epoch's end, resume it from its BackupAndRestore
backup in a fresh model, and check that it continued from the exact state."""

import keras
import numpy as np
import pytest


def killed_then_resumed(make_model, data, backup, epochs=4, kill_after=2, callbacks=(),
                        **fit_kwargs):
    """Fits `make_model()` (compiled) on `data` for `epochs` with
    `BackupAndRestore(backup)` and `callbacks`, and kills it (KeyboardInterrupt)
    at the end of epoch `kill_after`; then fits a fresh `make_model()` with the
    same backup. Asserts that the resumed model starts from every weight of the
    killed one (queues, banks, prototypes and counters included) and runs only
    the remaining epochs. Returns `(resumed model, its history)`."""
    saved = []

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == kill_after - 1:
                saved.extend(w.numpy().copy() for w in self.model.weights)
                raise KeyboardInterrupt

    checked = []

    class Check(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            assert len(self.model.weights) == len(saved)
            for a, b in zip(self.model.weights, saved):
                np.testing.assert_array_equal(a.numpy(), b, err_msg=a.path)
            checked.append(True)

    with pytest.raises(KeyboardInterrupt):
        make_model().fit(data, epochs=epochs, verbose=0, **fit_kwargs, callbacks=[
            keras.callbacks.BackupAndRestore(backup), *callbacks, Kill()])
    resumed = make_model()
    history = resumed.fit(data, epochs=epochs, verbose=0, **fit_kwargs, callbacks=[
        keras.callbacks.BackupAndRestore(backup), *callbacks, Check()]).history
    assert checked and len(history["loss"]) == epochs - kill_after
    return resumed, history
