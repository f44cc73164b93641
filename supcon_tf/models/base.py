"""`ContrastiveModel`: what every method of the family shares.

A method is a short subclass that overrides some of

- `forward(views, training)`: the networks, returning a dict of outputs
  (the base: one encoder pass over all views, then the head);
- `contrastive_loss(y, out, sample_weight, training)`: the loss of the batch
  (the base: the compiled loss on `out["projections"]`);
- `update_metrics(y, out)`: the method's own metrics (the base: contrastive
  accuracy);
- `after_step(y, out)`: work after the weights moved (enqueue keys, EMA);
- `default_loss()`: the loss `compile` uses when given none.

The base owns making views, the one `train_step` / `test_step`, the online
linear probe, replica-correct logs and the Keras 3 workarounds.
"""

import keras
import tensorflow as tf

from supcon_tf import _backend, _cross_replica
from supcon_tf._checks import check_int  # noqa: F401  (models import it here)
from supcon_tf._serialization import from_config_with_objects, serialize
from supcon_tf.augment import MultiView
from supcon_tf.distribute import is_multi_worker
from supcon_tf.encoders import as_encoder
from supcon_tf.heads import ProjectionHead
from supcon_tf.losses._masks import HOT, IDS, class_ids, label_kind
from supcon_tf.metrics import contrastive_accuracy, output_std
from supcon_tf.models.building import (build_when_constructed, build_if_known,  # noqa: F401
                                       check_two_views, feature_shape)
from supcon_tf.models.fit_checks import FitChecks
from supcon_tf.models.view_changes import (ViewChanges, check_adversarial, check_value_range,
                                           imix_layer)

_PACKAGE = "supcon_tf"


def _probe_targets(y):
    """int64 class ids for the probe: class ids as they are, one-hot by argmax."""
    kind = label_kind(y)
    if kind == IDS:
        return class_ids(y)
    if kind == HOT:
        return tf.argmax(y, axis=-1)
    return tf.cond(tf.equal(tf.shape(y)[1], 1), lambda: class_ids(y),
                   lambda: tf.argmax(y, axis=-1))


class _FunctionLoss(keras.losses.Loss):
    """A loss function given to `compile`, as a Keras loss (per-sample values
    reduced by the base class), as Keras's own wrapper does."""

    def __init__(self, fn):
        super().__init__(name=getattr(fn, "__name__", "loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


class ContrastiveModel(FitChecks, ViewChanges, keras.Model):
    """The base of the contrastive family: views, one encoder pass, the one
    `train_step`, replica-correct logs and the online linear probe.

    `fit` on `(images, labels)` or `images` alone. Each batch becomes `views`
    augmented views by `augmenter` inside the model, or arrives with its views
    made by the input pipeline as `[batch, views, H, W, C]`. Subclasses define
    the method (see the module docstring and docs/methods.md).

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        head: The projection head. Defaults to None: `ProjectionHead(128)`.
        augmenter: A Keras layer applied independently to each view. Defaults
            to None (views come from the input pipeline).
        views: Number of views per image when `augmenter` is given. Defaults to 2.
        probe_classes: Number of classes of an online linear probe on
            stop-gradient features of view 0, or None. Defaults to None.
        imix: i-Mix (Lee et al., ICLR 2021) while training: `"mixup"` or
            `"cutmix"` mixes view 0 of each sample with view 0 of another
            sample of the batch (`keras.layers.MixUp` / `CutMix`, per-sample
            weight `lam ~ Beta(imix_alpha, imix_alpha)`), and the loss becomes
            `lam * loss(i) + (1 - lam) * loss(perm(i))`, where `loss(perm(i))`
            pairs the mixed view with the other sample's view 1 (its virtual
            label). None (the default): no mixing. Methods whose loss has
            no per-sample values (Barlow Twins, VICReg) do not support it.
        imix_alpha: The Beta distribution's alpha, > 0 (<= 1 for `"cutmix"`,
            Keras's CutMix bound). Defaults to 1.0 (i-Mix's).
        adversarial_eps: CLAE (Ho & Vasconcelos, NeurIPS 2020) while
            training: an FGSM view `x_adv = x_0 + eps * sign(d loss / d x_0)`
            of view 0, from the gradient of the method's loss between a copy
            of view 0 (being perturbed, first position) and view 0, and the
            loss gains `adversarial_weight * loss(x_adv, view 0)`. 0 (the
            default): off. `eps` is a fraction of the pixel range
            `value_range` (0.03 moves each pixel by 3% of the range, as
            eps 0.03 on [0, 1] images does), whatever units the views
            arrive in.
        adversarial_weight: The adversarial term's weight, >= 0. Defaults to
            1.0 (CLAE's alpha).
        value_range: `(low, high)`, the pixel range of the views the model
            receives; the FGSM step is `adversarial_eps * (high - low)`.
            Defaults to `(0, 255)`, the library's convention (its pipelines
            and augmenters give [0, 255]; its encoders rescale inside).

    Every model logs `output_std` (`supcon_tf.metrics.output_std` of view 0's
    projections): about `1 / sqrt(dim)` while healthy, 0 when the outputs
    collapsed to a point.
    """

    # Whether the method's loss has per-sample values that i-Mix can weight.
    supports_imix = True

    def __init_subclass__(cls, **kwargs):
        # Every method is built where it is constructed (when its encoder
        # declares its input shape), in one place: here.
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = build_when_constructed(cls.__dict__["__init__"])

    # -- the family's registry (supcon_tf.methods) -----------------------------------
    #: The name `supcon_tf.methods.get` knows the method by (None: not a method).
    method_name = None
    #: The method's name in words, for model cards.
    method_title = None
    #: What a recipe feeds `fit` of the labels: "loss" (they define the
    #: positives), "probe" (only the online probe sees them) or "drop".
    labels = "loss"
    #: True when `fit` reads each example's index (`supcon_tf.data.with_index`).
    indexed = False
    #: `ProjectionHead` arguments of the method's recipe head.
    head_options = {}

    @classmethod
    def from_recipe(cls, encoder, head, augmenter, probe_classes, context, **args):
        """The model of a recipe (`supcon_tf.methods.build`): `args` are the
        recipe's `model` entries, constructor arguments here; a method whose
        recipe needs more (a predictor, the dataset's size) overrides this.
        `context` holds the whole `recipe`, `image_shape`, `num_examples`
        and `synchronized_bn`."""
        return cls(encoder, head=head, augmenter=augmenter, probe_classes=probe_classes,
                   **args)

    @classmethod
    def encoder_shape(cls, image_shape, args):
        """The input shape a recipe's encoder is built for."""
        return tuple(image_shape)

    @classmethod
    def encoder_options(cls, args):
        """Extra arguments of the recipe's encoder builder, from the recipe's
        `model` entries (CPC: the patch encoder's `norm`). None here."""
        return {}

    def recipe_callbacks(self, images):
        """Callbacks a recipe's `fit` needs, given the training `images` in
        dataset order, unshuffled and unaugmented. None here."""
        return []

    def __init__(self, encoder, head=None, augmenter=None, views=2,
                 probe_classes=None, imix=None, imix_alpha=1.0, adversarial_eps=0.0,
                 adversarial_weight=1.0, value_range=(0.0, 255.0), **kwargs):
        _backend.require_tensorflow(f"supcon_tf.models.{type(self).__name__}")
        super().__init__(**kwargs)
        views = check_int(views, "views", 1)
        probe_classes = check_int(probe_classes, "probe_classes", 2, allow_none=True)
        self.imix, self.imix_alpha = imix, imix_alpha
        self.imix_layer = imix_layer(imix, imix_alpha, views, type(self).__name__,
                                     self.supports_imix)
        self.adversarial_eps, self.adversarial_weight = check_adversarial(
            adversarial_eps, adversarial_weight, views, imix)
        self.value_range = check_value_range(value_range)
        self.encoder = as_encoder(encoder)
        self.head = head if head is not None else ProjectionHead(128)
        self.augmenter = augmenter
        self.views = views
        self.probe_classes = probe_classes
        self.multi_view = MultiView(augmenter, views) if augmenter is not None else None
        # `probe` is the attribute name that .keras files of v0.1.0 hold.
        self.probe = (keras.layers.Dense(probe_classes, name="probe")
                      if probe_classes is not None else None)
        self.contrastive_accuracy_tracker = keras.metrics.Mean(name="contrastive_accuracy")
        self.output_std_tracker = keras.metrics.Mean(name="output_std")
        if self.probe is not None:
            self.probe_loss_tracker = keras.metrics.Mean(name="probe_loss")
            self.probe_accuracy_tracker = keras.metrics.Mean(name="probe_accuracy")
        self._input_rank = None

    # -- construction, compile, fit ------------------------------------------------

    def build(self, input_shape):
        features = feature_shape(self.encoder, input_shape)
        if not self.head.built:
            self.head.build(features)
        if self.probe is not None and not self.probe.built:
            self.probe.build(features)
        self.built = True

    def default_loss(self):
        """The loss `compile` uses when given none."""
        raise NotImplementedError

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        """As `keras.Model.compile`, with `default_loss()` when `loss` is None."""
        super().compile(optimizer=optimizer,
                        loss=loss if loss is not None else self.default_loss(), **kwargs)

    def compile_from_config(self, config):
        """Recompiles a loaded model (Keras skips models with a custom `compile`)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def on_fit_begin(self, epochs, steps_per_epoch, initial_epoch=0):
        """Called when `fit` starts its first epoch (after `BackupAndRestore`
        restored a run), with the planned epochs, the steps per epoch (None
        when unknown) and the epoch it starts from. Schedules over a `fit`
        call count from `fit_start_step(...)`. Does nothing here."""

    def fit_start_step(self, initial_epoch, steps_per_epoch):
        """The optimizer iteration at which epoch 0 of this `fit` call began:
        the current one less the epochs already done (`initial_epoch`, or the
        epochs a restored backup holds). A second `fit` call starts its
        schedules afresh; a resumed one continues them."""
        return int(self.optimizer.iterations.numpy()) - int(initial_epoch) * int(
            steps_per_epoch or 0)

    def extra_encoders(self):
        """Representations besides `encoder` that `examples/pretrain.py`
        saves beside it, `{file stem: keras.Model}` (LooC++'s
        concatenated spaces). None here."""
        return {}

    # -- the networks ----------------------------------------------------------------

    def encode(self, views, training, encoder=None, head=None):
        """`[batch, views, H, W, C]` -> features `[batch, views, F]` and
        projections `[batch, views, D]`, with one call of `encoder` (default:
        the online one) and `head` on all views."""
        encoder = self.encoder if encoder is None else encoder
        head = self.head if head is None else head
        shape = tf.shape(views)
        flat = tf.reshape(views, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))
        features = encoder(flat, training=training)
        features = tf.reshape(features, [shape[0], shape[1], -1])
        return features, head(features, training=training)

    def call(self, inputs, training=False):
        inputs = tf.convert_to_tensor(inputs)
        if inputs.shape.rank == 5:
            return self.encode(inputs, training)[1]
        return self.head(self.encoder(inputs, training=training), training=training)

    def make_views(self, x):
        """Images `[batch, H, W, C]` -> views `[batch, views, H, W, C]` (by the
        augmenter); views pass through."""
        x = tf.convert_to_tensor(x)
        name = type(self).__name__
        if x.shape.rank == 5:
            return x
        if x.shape.rank != 4:
            raise ValueError(f"{name} expects images [batch, H, W, C] or views "
                             f"[batch, views, H, W, C]. Received: x.shape={x.shape}")
        if self.multi_view is None:
            raise ValueError(
                f"{name} got images [batch, H, W, C] but has no `augmenter` to make "
                "views: pass `augmenter=` or feed views [batch, views, H, W, C]. "
                f"Received: x.shape={x.shape}")
        return self.multi_view(x, training=True)

    def forward(self, views, training):
        """The networks on the views: a dict with `features` and `projections`."""
        features, projections = self.encode(views, training)
        return {"features": features, "projections": projections}

    # -- losses, metrics, the step -------------------------------------------------

    def loss_object(self):
        """The compiled loss as a `keras.losses.Loss` (a function or a name
        given to `compile` is wrapped as Keras wraps it)."""
        loss = self.loss
        if not isinstance(loss, keras.losses.Loss):
            loss = keras.losses.get(loss)
        if not isinstance(loss, keras.losses.Loss):
            loss = _FunctionLoss(loss)
        return loss

    def contrastive_loss(self, x, y, out, sample_weight, training):
        """The method's loss of this replica's batch, scaled as Keras scales
        the compiled loss (so the replicas' sum is the global batch's loss):
        here the compiled loss on `out["projections"]`. The layers'
        regularisation losses are not in it; `train_step` adds them once."""
        return self.loss_object()(y, out["projections"], sample_weight=sample_weight)

    def additional_losses(self):
        """Regularisation losses of the layers, scaled for the replicas' sum."""
        if not self.losses:
            return 0.0
        return tf.add_n([tf.cast(v, tf.float32) for v in self.losses]) / _cross_replica.num_replicas()

    def probe_loss(self, y, out, view=0):
        """The online probe's cross-entropy on stop-gradient features of
        `view` (scaled for the replicas' sum), or None without a probe or
        labels. Updates the probe's metrics."""
        if self.probe is None or y is None:
            return None
        ids = _probe_targets(tf.convert_to_tensor(y))
        logits = tf.cast(self.probe(tf.stop_gradient(out["features"][:, view])), tf.float32)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            ids, logits, from_logits=True))
        correct = tf.equal(tf.argmax(logits, -1), tf.cast(ids, tf.int64))
        self.probe_loss_tracker.update_state(loss)
        self.probe_accuracy_tracker.update_state(tf.cast(correct, tf.float32))
        # Gradients are summed over replicas: scale this replica's mean as
        # Keras scales the compiled loss.
        return loss / _cross_replica.num_replicas()

    def update_metrics(self, y, out):
        """Updates the method's own metrics (here: contrastive accuracy)."""
        self.contrastive_accuracy_tracker.update_state(
            contrastive_accuracy(y, out["projections"]))

    def apply_gradients(self, grads_and_vars):
        """The optimizer step of `train_step`: here the compiled optimizer
        on every `(gradient, variable)` pair."""
        self.optimizer.apply_gradients(grads_and_vars)

    def after_step(self, y, out):
        """Work after the optimizer step (enqueue, EMA). Nothing here."""

    def _step(self, data, training):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        views = self.make_views(x)
        mixing = training and self.imix_layer is not None
        if mixing:
            views, lam, order = self.imix_mix(views)
        out = self.forward(views, training)
        if mixing:
            loss = self.imix_loss(x, y, out, sample_weight, training, lam, order)
        else:
            loss = self.contrastive_loss(x, y, out, sample_weight, training)
        if training and self.adversarial_eps > 0:
            loss += self.adversarial_loss(x, y, views, sample_weight)
        # The probe and the collapse monitor look at an unmixed view, where
        # the outputs hold one (MoCo's hold the mixed queries alone).
        clean = 1 if mixing and out["projections"].shape[1] > 1 else 0
        probe_loss = None if mixing and clean == 0 else self.probe_loss(y, out, view=clean)
        self.update_metrics(y, out)
        self.output_std_tracker.update_state(output_std(out["projections"][:, clean]))
        return loss, probe_loss, out, y, sample_weight

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss, probe_loss, out, y, sample_weight = self._step(data, True)
            total = loss + self.additional_losses()
            if probe_loss is not None:
                total += probe_loss
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        self.after_step(y, out)
        return self._logs(loss, y, out, sample_weight)

    def test_step(self, data):
        loss, _, out, y, sample_weight = self._step(data, False)
        return self._logs(loss, y, out, sample_weight)

    def _logs(self, loss, y, out, sample_weight):
        own = self._own_metrics()
        probe = [] if self.probe is None else [self.probe_loss_tracker,
                                               self.probe_accuracy_tracker]
        logs = {}
        for metric in self.metrics:
            if metric.name == "loss":
                # The compiled loss is scaled by 1 / replicas for the gradient
                # sum; the metric reports the loss of the global batch.
                metric.update_state(loss * _cross_replica.num_replicas())
            elif any(metric is m for m in own):
                if y is None and any(metric is m for m in probe):
                    continue               # no labels: the probe did not run
            else:
                metric.update_state(y, out["projections"], sample_weight=sample_weight)
            logs[metric.name] = metric.result()
        if is_multi_worker(self.distribute_strategy):
            # Keras reduces the logs over workers with
            # `strategy.reduce("MEAN", v, axis=0)`, which needs a batch axis:
            # scalars fail ("Invalid reduction dimension 0"). Every replica
            # holds an equal share of the batch, so the mean of the replicas'
            # values is the global one.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def _own_metrics(self):
        """The trackers this model updates itself (not the compiled metrics)."""
        own = [self.contrastive_accuracy_tracker, self.output_std_tracker]
        if self.probe is not None:
            own += [self.probe_loss_tracker, self.probe_accuracy_tracker]
        return own

    @property
    def metrics(self):
        return super().metrics + self._own_metrics()

    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder": serialize(self.encoder),
            "head": serialize(self.head),
            "augmenter": serialize(self.augmenter),
            "views": self.views,
            "probe_classes": self.probe_classes,
            "imix": self.imix,
            "imix_alpha": self.imix_alpha,
            "adversarial_eps": self.adversarial_eps,
            "adversarial_weight": self.adversarial_weight,
            "value_range": list(self.value_range),
        })
        return config

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config, ["encoder", "head", "augmenter"])


class LossReadsState:
    """For a model whose loss reads its own state (a memory, a queue,
    prototypes, codes) in `contrastive_loss`: `compile` takes only a loss of
    the class `own_loss` (or none: `default_loss()`), and Keras's own loss
    path (its symbolic build under a strategy calls `compute_loss` on
    `model(x)`) gives the layers' regularisation losses only. Put it before
    `ContrastiveModel` among the bases; `own_loss` may be a tuple of
    classes; `own_loss_reads` completes the
    message ("SwAVModel's loss reads <it>")."""

    own_loss = None
    own_loss_reads = "the model's state"

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        classes = self.own_loss if isinstance(self.own_loss, tuple) else (self.own_loss,)
        if loss is not None and not isinstance(loss, classes):
            names = " or ".join(("an " if c.__name__[0] in "AEINOU" else "a ") + c.__name__
                                for c in classes)
            raise ValueError(f"{type(self).__name__}'s loss reads {self.own_loss_reads}: "
                             f"compile it with {names} or none (the default). "
                             f"Received: loss={loss!r}")
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self.additional_losses()
