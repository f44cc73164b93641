"""Non-parametric instance discrimination (NPID, Wu et al., CVPR 2018): every
training sample is its own class, represented by its slot in a memory bank."""

import warnings

import keras
import tensorflow as tf

from supcon_tf import _cross_replica
from supcon_tf.heads import ProjectionHead
from supcon_tf.losses.npid import KINDS as LOSSES, NPIDLoss, nce_normalizer
from supcon_tf.memory import MemoryBank
from supcon_tf.models.base import (ContrastiveModel, LossReadsState, check_int,
                                   feature_shape)



def split_indexed(x, name):
    """`{"image", "index"}` -> (images, index); anything else is an error."""
    if not isinstance(x, dict) or set(x) != {"image", "index"}:
        raise ValueError(f"{name} needs each sample's dataset index: feed "
                         "`supcon_tf.data.with_index(dataset)` (before shuffling), whose "
                         "inputs are {'image': ..., 'index': ...}. Received inputs of "
                         f"type {type(x).__name__}"
                         + (f" with keys {sorted(x)}" if isinstance(x, dict) else ""))
    return x["image"], x["index"]


class IndexedInputs:
    """For models whose inputs are `{"image", "index"}` (`data.with_index`):
    builds from the images' shape, then `build_memory(dim)` with the
    projection's size; makes views of the images; calls on the images."""

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape["image"]
        super().build(input_shape)
        self.build_memory(
            self.head.compute_output_shape(feature_shape(self.encoder, input_shape))[-1])

    def build_memory(self, dim):
        """Creates the model's memory of the dataset (once)."""
        raise NotImplementedError

    def make_views(self, x):
        images, _ = split_indexed(x, type(self).__name__)
        return super().make_views(images)

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            inputs = inputs["image"]
        return super().call(inputs, training=training)


class OneIndexedView(IndexedInputs):
    """`IndexedInputs` with one view per image: images `[batch, H, W, C]`
    and no augmenter are that view as they come."""

    def make_views(self, x):
        images = tf.convert_to_tensor(split_indexed(x, type(self).__name__)[0])
        if images.shape.rank == 4 and self.multi_view is None:
            return images[:, None]
        return super().make_views(x)


@keras.saving.register_keras_serializable(package="supcon_tf")
class NPIDModel(LossReadsState, OneIndexedView, ContrastiveModel):
    """Instance discrimination against a memory bank of the whole dataset.

    Each image (one augmented view) is embedded and L2-normalised, `f`; the
    bank holds one vector per training sample, `v_j`. Sample `i` is its own
    class: its positive is its own slot `v_i`, its negatives are other slots.
    After each step the batch's slots move towards the new embeddings,
    `v_i <- normalize(0.5 v_i + 0.5 f_i)` (`MemoryBank`). `fit` takes
    `supcon_tf.data.with_index(dataset)`: inputs `{"image", "index"}`, with
    or without labels (labels only feed the online probe).

    Losses (`loss`), with `s_j = v_j . f / temperature`:

    - `"nce"` (the paper's noise-contrastive estimation): `P(j) = exp(s_j) /
      Z` with `Z` estimated once, on the first batch, as `n * mean(exp(s))`
      over its positives and negatives (as the reference code,
      zhirongw/lemniscate.pytorch, does), noise `Pn = 1 / n`, and `m`
      negatives: `-log h(v_i) - sum_j log(1 - h(v_j))` with
      `h = P / (P + m Pn)`.
    - `"softmax"`: the non-parametric softmax, cross-entropy of `s` with the
      own slot as the target, over every slot (`num_negatives=None`, the
      paper's equation 2) or over the own slot and `m` sampled ones.

    The `m = num_negatives` negatives are drawn uniformly from the bank once
    per step and shared by the batch (the reference draws them per sample;
    sharing keeps the step at one `[m, dim]` gather instead of
    `[batch, m, dim]`).

    Under `tf.distribute` every replica reads the same bank (the negatives are
    drawn with the same stateless seed) and applies the same update with the
    global batch's indices and embeddings.

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        bank_size: Number of training samples (one slot each). An index
            outside `[0, bank_size)` stops training with an error; slots that
            `fit` never feeds (a bank larger than the dataset, or an input
            that is a part of it) raise a warning that names both causes.
        head: The projection. Defaults to None: a linear layer to 128 and L2
            normalisation (the paper's).
        augmenter: A Keras layer making the view. Defaults to None (images
            `[batch, H, W, C]` already augmented, or `[batch, 1, H, W, C]`).
        temperature: `tau`. Defaults to 0.07.
        num_negatives: `m`, or None for every slot (`"softmax"` only).
            Defaults to 4096.
        loss: `"nce"` or `"softmax"`. Defaults to `"nce"`.
        bank_momentum: The bank's momentum. Defaults to 0.5.
        probe_classes: Classes of an online linear probe, or None.

    Metrics: `loss`, `contrastive_accuracy` (how often a sample's own slot is
    the most similar of the slots its loss compares it with), `output_std`,
    and the probe's.

    Reference:
        Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
        Discrimination", CVPR 2018.
    """

    supports_imix = False

    own_loss = NPIDLoss
    own_loss_reads = "its memory bank"
    method_name = "npid"
    method_title = "Non-parametric instance discrimination (NPID)"
    labels = "probe"
    indexed = True
    head_options = {"kind": "linear"}

    @classmethod
    def from_recipe(cls, encoder, head, augmenter, probe_classes, context, **args):
        """The bank holds one slot per training example (`num_examples`)."""
        return cls(encoder, context["num_examples"], head=head, augmenter=augmenter,
                   probe_classes=probe_classes, **args)

    def __init__(self, encoder, bank_size, head=None, augmenter=None, temperature=0.07,
                 num_negatives=4096, loss="nce", bank_momentum=0.5, probe_classes=None,
                 **kwargs):
        kwargs.pop("views", None)
        if head is None:
            head = ProjectionHead(128, kind="linear")
        super().__init__(encoder, head=head, augmenter=augmenter, views=1,
                         probe_classes=probe_classes, **kwargs)
        self.bank_size = check_int(bank_size, "bank_size", 2)
        # What `fit`'s bank check has seen and said (Python state, per model).
        self._bank_check_state = {"first_warned": False, "stale_warned": False,
                                  "last_seen": 0, "stale_epochs": 0}
        if loss not in LOSSES:
            raise ValueError(f"`loss` must be one of {LOSSES}. Received: loss={loss!r}")
        if num_negatives is None and loss == "nce":
            raise ValueError("`num_negatives=None` (every slot) is for loss='softmax'; NCE "
                             "needs a number of noise samples.")
        self.num_negatives = check_int(num_negatives, "num_negatives", 1, allow_none=True)
        self.temperature = NPIDLoss(temperature, loss).temperature      # checked there
        self.npid_loss = loss
        self.bank_momentum = bank_momentum
        self.bank = None
        self.nce_z = None

    def build_memory(self, dim):
        if self.bank is None:
            self.bank = MemoryBank(self.bank_size, dim, momentum=self.bank_momentum,
                                   name="bank")
            self.nce_z = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                         name="nce_z")
            self.steps_seen = self.add_weight(shape=(), initializer="zeros", dtype="int64",
                                              trainable=False, name="steps_seen")
            self.seen = self.add_weight(shape=(self.bank_size,), initializer="zeros",
                                        dtype="int32", trainable=False, name="seen")

    def _negatives(self):
        """`m` slot indices, the same on every replica (stateless draw)."""
        seed = tf.stack([tf.constant(20180618, tf.int64), tf.cast(self.steps_seen, tf.int64)])
        return tf.random.stateless_uniform([self.num_negatives], seed, 0, self.bank_size,
                                           dtype=tf.int64)

    def default_loss(self):
        """`NPIDLoss(temperature, loss)`: a compiled `NPIDLoss` replaces it."""
        return NPIDLoss(self.temperature, self.npid_loss)

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        if (isinstance(loss, NPIDLoss) and loss.kind == "nce"
                and self.num_negatives is None):
            raise ValueError("NCE needs a number of noise samples: `num_negatives=None` "
                             "(every slot) is for kind='softmax'.")
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def contrastive_loss(self, x, y, out, sample_weight, training):
        """The compiled `NPIDLoss` on the similarities of each embedding to
        its own slot and the step's negative slots (or every slot)."""
        _, index = split_indexed(x, type(self).__name__)
        index = self.bank.check_index(index)
        out["index"] = index
        loss = self.loss if isinstance(self.loss, NPIDLoss) else self.default_loss()
        f = tf.cast(out["projections"][:, 0], tf.float32)
        if self.num_negatives is None:                     # every slot: softmax only
            similarities = tf.matmul(f, self.bank.read(), transpose_b=True)
            out["own_first"] = tf.equal(tf.argmax(similarities, axis=1), index)
            return loss(index, similarities, sample_weight=sample_weight)
        own = tf.reduce_sum(self.bank.read(index) * f, axis=1)
        negatives = tf.matmul(f, self.bank.read(self._negatives()), transpose_b=True)
        out["own_first"] = own >= tf.reduce_max(negatives, axis=1)
        similarities = tf.concat([own[:, None], negatives], axis=1)
        if loss.kind == "softmax":
            return loss(None, similarities, sample_weight=sample_weight)
        # Z from the first batch (over the global batch), then fixed.
        z = tf.where(self.nce_z > 0, tf.convert_to_tensor(self.nce_z),
                     nce_normalizer(similarities, loss.temperature, self.bank_size))
        if training:
            _cross_replica.assign([(self.nce_z, z)])
        return loss(None, similarities, sample_weight=sample_weight,
                    noise_ratio=self.num_negatives / self.bank_size, z=z)

    def update_metrics(self, y, out):
        """`contrastive_accuracy`: how often a sample's own slot is the most
        similar of those its loss compares it with."""
        self.contrastive_accuracy_tracker.update_state(tf.cast(out["own_first"], tf.float32))

    def after_step(self, y, out):
        index = _cross_replica.all_gather(out["index"])
        features = _cross_replica.all_gather(tf.stop_gradient(
            tf.cast(out["projections"][:, 0], tf.float32)))
        self.bank.update(index, features)
        _cross_replica.scatter_update(self.seen, index[:, None], tf.ones_like(index, tf.int32))
        _cross_replica.assign([(self.steps_seen, tf.convert_to_tensor(self.steps_seen) + 1)])

    def fit(self, *args, **kwargs):
        callbacks = list(kwargs.pop("callbacks", None) or []) + [_BankCheck()]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("views", None)
        config.update({"bank_size": self.bank_size, "temperature": self.temperature,
                       "num_negatives": self.num_negatives, "loss": self.npid_loss,
                       "bank_momentum": self.bank_momentum})
        return config


class _BankCheck(keras.callbacks.Callback):
    """Warns when slots of the bank are never fed: they stay random
    negatives for the whole run. Two checks, each warning once per model:
    after the bank's first epoch, unseen slots of a batch or more (fewer may
    be the remainder that `drop_remainder` left out); and after any later
    epoch, slots still unseen after `_STALE_EPOCHS` epochs that fed no new
    slot (a bank larger than the dataset by less than a batch, also with a
    dataset of unknown length). It cannot tell a bank larger than the dataset
    from an input that is a part of it (`take()`, a short `steps_per_epoch`),
    so the warning names both."""

    _STALE_EPOCHS = 3

    def on_train_begin(self, logs=None):
        self._fresh = int(self.model.steps_seen.numpy()) == 0
        self._steps_at_epoch = int(self.model.steps_seen.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self._steps_at_epoch = int(self.model.steps_seen.numpy())

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        seen = int(model.seen.numpy().sum())
        unseen = model.bank_size - seen
        steps = int(model.steps_seen.numpy()) - self._steps_at_epoch
        if steps == 0:
            return
        state = model._bank_check_state
        if unseen == 0:
            return
        if self._fresh and not state["first_warned"]:
            self._fresh = False
            if unseen >= seen / int(model.steps_seen.numpy()):   # a batch or more
                state["first_warned"] = True
                self._warn(f"after the first epoch {unseen} of the bank's "
                           f"{model.bank_size} slots were not fed")
                return
        self._fresh = False
        if seen > state["last_seen"]:
            state["last_seen"], state["stale_epochs"] = seen, 0
            return
        state["stale_epochs"] += 1
        if state["stale_epochs"] >= self._STALE_EPOCHS and not state["stale_warned"]:
            state["stale_warned"] = True
            self._warn(f"{unseen} of the bank's {model.bank_size} slots have never been fed, "
                       f"and the last {state['stale_epochs']} epochs fed no new slot")

    def _warn(self, what):
        highest = int(tf.reduce_max(tf.where(self.model.seen > 0)).numpy())
        warnings.warn(
            f"NPIDModel: {what} (highest index fed: {highest}); they stay random negatives "
            "for as long as they are not fed. Either `bank_size` is larger than the "
            "dataset fed through `supcon_tf.data.with_index` (it must equal the number of "
            f"samples: {highest + 1} if every index up to {highest} is one), or `fit`'s "
            "input covers only part of the dataset (`take()`, a `steps_per_epoch` shorter "
            "than the data).", stacklevel=2)
