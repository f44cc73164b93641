"""Training callbacks: a `BackupAndRestore` that a kill at any moment cannot
break, and that keeps the run's record (per-epoch logs, seconds, processes).

Keras's own `keras.callbacks.BackupAndRestore` writes its weights file and
its metadata in place: a kill during the write leaves a partial
`latest.weights.h5` that every rerun then fails to open, a kill between the
two files pairs one epoch's weights with another's epoch number, and a
folder whose weights were deleted resumes "at epoch N" with untrained
weights. Here each epoch's checkpoint is one folder, written under a hidden
temporary name and renamed into place, holding the weights and the state
together; a rerun resumes from the newest complete checkpoint, or starts
afresh (with a warning) when there is none.
"""

import glob
import json
import os
import re
import shutil
import tempfile
import time
import warnings

import keras

WEIGHTS = "model.weights.h5"
STATE = "state.json"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CHECKPOINT = re.compile(r"^epoch-(\d+)$")


def _fsync(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _complete(folder):
    """The state of a checkpoint folder whose weights and state are whole,
    else None."""
    try:
        with open(os.path.join(folder, WEIGHTS), "rb") as f:
            if f.read(8) != _HDF5_SIGNATURE:
                return None
        with open(os.path.join(folder, STATE)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        return None
    return state


def checkpoints(backup_dir):
    """`(epoch, folder)` of the checkpoint folders in `backup_dir`, newest
    first (complete or not)."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(os.fspath(backup_dir)), "epoch-*")):
        match = _CHECKPOINT.match(os.path.basename(path))
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def latest_state(backup_dir):
    """The state (`epoch`, `epochs`, `seconds`, `processes`) of the newest
    complete checkpoint in `backup_dir`, or None."""
    for _, folder in checkpoints(backup_dir):
        state = _complete(folder)
        if state is not None:
            return state
    return None


class BackupAndRestore(keras.callbacks.Callback):
    """Backs up the model at the end of every epoch and resumes an
    interrupted `fit` from the newest complete backup, whatever moment the
    interruption came at.

    A drop-in for `keras.callbacks.BackupAndRestore(backup_dir)` (epoch
    frequency): each epoch's weights (optimizer and every model variable
    included) and state go into a folder `backup_dir/epoch-N` written under a
    temporary name and renamed into place, so a kill at any moment leaves the
    previous complete backup; the newest `keep` are kept. On `fit`, the
    newest complete backup is loaded and training continues after its epoch;
    incomplete ones (a damaged or half-deleted folder) are skipped with a
    warning, and with no complete backup training starts from epoch 0.

    The state also records the run: each epoch's logs, the training seconds
    summed over every process that worked on the run, and how many processes
    that was (`record`, also after `fit`), so a history survives resumes
    exactly, epoch for epoch, with the weights it belongs to. Put it last
    in `callbacks`: it records each epoch's logs as the callbacks before it
    leave them (e.g. `PCLClustering`'s `clustering_seconds`).

    Args:
        backup_dir: The folder of the backups.
        delete_checkpoint: Delete `backup_dir` when `fit` ends normally.
            Defaults to True.
        keep: Complete backups kept, >= 1. Defaults to 2.
        read_only: Restore but never write or delete (the non-chief workers
            of a multi-worker run, which share the chief's folder). Defaults
            to False.

    Example:

    >>> backup = BackupAndRestore("runs/x/backup")   # doctest: +SKIP
    >>> model.fit(ds, epochs=10, callbacks=[backup])  # doctest: +SKIP
    """

    def __init__(self, backup_dir, delete_checkpoint=True, keep=2, read_only=False):
        super().__init__()
        if not backup_dir:
            raise ValueError(f"`backup_dir` must be a folder path. Received: backup_dir={backup_dir!r}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"`keep` must be an integer >= 1. Received: keep={keep!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.delete_checkpoint = bool(delete_checkpoint)
        self.keep = keep
        self.read_only = bool(read_only)
        self.record = {"epoch": 0, "epochs": {}, "seconds": 0.0, "processes": 0}
        self.restored_epoch = 0
        self._seconds_before = 0.0
        self._start = None

    # -- restore -------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._start = time.time()
        found = checkpoints(self.backup_dir)
        for epoch, folder in found:
            state = _complete(folder)
            if state is None:
                continue
            self._load(folder, state)
            return
        if found or (os.path.isdir(self.backup_dir) and os.listdir(self.backup_dir)):
            warnings.warn(
                f"{self.backup_dir} holds no complete backup (damaged or partly deleted): "
                "training starts from epoch 0.", stacklevel=2)
        self.record = {"epoch": 0, "epochs": {}, "seconds": 0.0, "processes": 1}
        self.restored_epoch = 0
        self._seconds_before = 0.0

    def _load(self, folder, state):
        model = self.model
        if not model.built:
            raise ValueError("BackupAndRestore needs a built model before `fit` (call it on "
                             f"a batch first) to restore {folder}.")
        if getattr(model, "optimizer", None) is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(folder, WEIGHTS))
        self.restored_epoch = state["epoch"]
        # How Keras's own BackupAndRestore tells `fit` where to start.
        model._initial_epoch = state["epoch"]
        self.record = {"epoch": state["epoch"], "epochs": dict(state.get("epochs", {})),
                       "seconds": float(state.get("seconds", 0.0)),
                       "processes": int(state.get("processes", 0)) + 1}
        self._seconds_before = self.record["seconds"]

    # -- back up -------------------------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        self.record["epoch"] = epoch + 1
        self.record["epochs"][str(epoch + 1)] = {
            k: float(v) for k, v in (logs or {}).items() if _is_number(v)}
        self.record["seconds"] = self._seconds_before + time.time() - self._start
        if not self.read_only:
            self._write(epoch + 1)

    def _write(self, epoch):
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".epoch-{epoch}.tmp-", dir=self.backup_dir)
        try:
            weights = os.path.join(tmp, WEIGHTS)
            self.model.save_weights(weights, overwrite=True)
            with open(os.path.join(tmp, STATE), "w") as f:
                json.dump(self.record, f)
            for path in (weights, os.path.join(tmp, STATE)):
                _fsync(path)
            target = os.path.join(self.backup_dir, f"epoch-{epoch}")
            if os.path.exists(target):             # the same epoch again (a rerun)
                aside = tempfile.mkdtemp(prefix=f".epoch-{epoch}.old-", dir=self.backup_dir)
                os.replace(target, os.path.join(aside, "old"))
                shutil.rmtree(aside, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        self._prune()

    def _prune(self):
        complete = 0
        for _, folder in checkpoints(self.backup_dir):
            if complete < self.keep and _complete(folder) is not None:
                complete += 1
                continue
            shutil.rmtree(folder, ignore_errors=True)
        for leftover in glob.glob(os.path.join(glob.escape(self.backup_dir), ".epoch-*")):
            shutil.rmtree(leftover, ignore_errors=True)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and not self.read_only and os.path.isdir(self.backup_dir):
            shutil.rmtree(self.backup_dir, ignore_errors=True)


def _is_number(value):
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
