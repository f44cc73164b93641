"""SimCLR v2's few-label recipe (Chen et al., NeurIPS 2020): fine-tune the
encoder with part of the pretrained projection head (`FineTuneClassifier`),
then distil the fine-tuned network into a student on unlabelled data
(`DistillationModel`)."""

import keras
import tensorflow as tf

from supcon_tf import _cross_replica
from supcon_tf._serialization import from_config_with_objects, serialize
from supcon_tf.heads import ProjectionHead
from supcon_tf.losses.distillation import DistillationLoss
from supcon_tf.models.base import build_if_known, check_int, feature_shape
from supcon_tf.models.classifiers import EncoderClassifier
from supcon_tf.models.fit_checks import quiet_dataset_shuffle

_PACKAGE = "supcon_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FineTuneClassifier(EncoderClassifier):
    """Fine-tunes an encoder end to end from a layer of its projection head.

    SimCLR v2 pretrains with a deeper head (e.g. `ProjectionHead(128,
    hidden_dims=(64, 64))`: three Dense layers) and fine-tunes not from the
    encoder's output but from the first hidden layer of that head: the
    classifier's input is `head.blocks[:head_layers]` (each Dense ->
    BatchNorm -> ReLU, with their pretrained weights) applied to the
    encoder's features. With `head_layers=0` it is the encoder alone and a
    linear layer (as `CrossEntropyClassifier`). Everything below the new
    linear layer trains. Outputs logits.

    Args:
        encoder: The pretrained encoder, a Keras model from images to
            `[batch, features]` (e.g. `SupConModel.encoder`).
        num_classes: Number of classes, >= 2.
        head: The pretrained `ProjectionHead` (e.g. `SupConModel.head`), needed
            when `head_layers > 0`. Defaults to None.
        head_layers: How many of the head's hidden layers to keep, from 0 to
            the number it has. Defaults to 0.
        augmenter: Optional augmentation applied while training. Defaults to None.
        normalize_features: Standardise the features before the linear layer.
            Defaults to None (False).

    Example:

    >>> pretrained = SupConModel(enc, head=ProjectionHead(128, (64, 64)))  # doctest: +SKIP
    >>> clf = FineTuneClassifier(pretrained.encoder, 10, head=pretrained.head,
    ...                          head_layers=1)                             # doctest: +SKIP

    Reference:
        Chen et al., "Big Self-Supervised Models are Strong Semi-Supervised
        Learners", NeurIPS 2020.
    """

    def __init__(self, encoder, num_classes, head=None, head_layers=0, augmenter=None,
                 normalize_features=None, head_blocks=None, **kwargs):
        head_layers = check_int(head_layers, "head_layers", 0)
        if head_blocks is None:                     # (head_blocks: from a saved config)
            head_blocks = self._kept_blocks(head, head_layers)
        # Only the kept layers are tracked: the rest of the head takes no part.
        self.head_dense = [dense for dense, _ in head_blocks]
        self.head_norms = [norm for _, norm in head_blocks]
        self.head_layers = head_layers
        super().__init__(encoder, num_classes, augmenter=augmenter,
                         normalize_features=normalize_features, **kwargs)

    @staticmethod
    def _kept_blocks(head, head_layers):
        if not head_layers:
            return []
        if head is None:
            raise ValueError("`head_layers` > 0 needs the pretrained `head`. "
                             f"Received: head=None, head_layers={head_layers}")
        if not isinstance(head, ProjectionHead):
            raise TypeError("`head` must be a supcon_tf.heads.ProjectionHead. "
                            f"Received: {type(head).__name__}")
        if head.kind != "mlp":
            raise ValueError(f"A {head.kind!r} head has no hidden layers to keep. "
                             f"Received: head_layers={head_layers}")
        if not head.built:
            raise ValueError("`head` must be built (pretrained, or called once) to keep its "
                             "layers.")
        if head_layers > len(head.blocks):
            raise ValueError(f"`head_layers` must be at most the head's {len(head.blocks)} "
                             f"hidden layers. Received: head_layers={head_layers}")
        return list(head.blocks[:head_layers])

    def features_shape(self, input_shape):
        features = feature_shape(self.encoder, input_shape)
        for dense, norm in zip(self.head_dense, self.head_norms):
            if not dense.built:
                dense.build(features)
            features = tuple(features[:-1]) + (dense.units,)
            if norm is not None and not norm.built:
                norm.build(features)
        return features

    def features(self, x, training=False):
        """The classifier's input: encoder features through the kept head layers."""
        h = self.encoder(x, training=training)
        for dense, norm in zip(self.head_dense, self.head_norms):
            h = dense(h)
            if norm is not None:
                h = norm(h, training=training)
            h = keras.ops.relu(h)
        return h

    def get_config(self):
        config = super().get_config()
        config.update({"head_layers": self.head_layers,
                       "head_blocks": [[serialize(d), serialize(n)]
                                       for d, n in zip(self.head_dense, self.head_norms)]})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["head_blocks"] = [
            tuple(None if c is None else keras.saving.deserialize_keras_object(c) for c in pair)
            for pair in config.get("head_blocks") or []]
        return from_config_with_objects(cls, config, ["encoder", "augmenter"])


def _classes_of(model):
    """The number of logits a model declares, or None when it does not."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        return None
    return shape[-1] if isinstance(shape, tuple) and shape else None


def _check_same_classes(teacher, student):
    if teacher is not None and student is not None and teacher != student:
        raise ValueError("The teacher and the student must predict the same classes: the "
                         f"teacher gives {teacher} logits, the student {student}.")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DistillationModel(keras.Model):
    """Trains `student` on `teacher`'s temperature-softened predictions.

    The loss of SimCLR v2's distillation stage, per example:

        alpha * -sum_y P_T(y | x; T) log P_S(y | x; T)
        + (1 - alpha) * -log P_S(label | x)        (labelled examples only)

    with `P(y | x; T) = softmax(logits / T)`. `fit` takes images alone
    (distillation only; `alpha` must then be 1) or `(images, labels)`, where
    a label of -1 marks an unlabelled example: the cross-entropy term averages
    over the labelled examples of the batch, the distillation term over all.
    Sample weights (`fit(x, y, sample_weight=w)`) scale each example's terms,
    as Keras's "sum over batch size" reduction does: `sum(w * term) / n` over
    the examples the term averages.
    The teacher is frozen (`trainable = False`, called with
    `training=False`); the student can be the same architecture
    (self-distillation) or a smaller one. Calling the model returns the
    student's logits.

    Metrics: `loss`, `distillation_loss`, `teacher_agreement` (the student's
    top class is the teacher's), and with labels `cross_entropy` and
    `accuracy` (on the labelled examples).

    Args:
        teacher: A Keras model from images to logits `[batch, classes]` (e.g. a
            fine-tuned `FineTuneClassifier`).
        student: A Keras model from the same images to logits of the same
            classes.
        temperature: Softening temperature T > 0. Defaults to 1.0 (SimCLR v2's).
        alpha: Weight of the distillation term in [0, 1]. Defaults to 1.0
            (distillation only, SimCLR v2's main setting).
        augmenter: Optional augmentation applied while training; teacher and
            student see the same augmented image. Defaults to None.

    Reference:
        Chen et al., "Big Self-Supervised Models are Strong Semi-Supervised
        Learners", NeurIPS 2020; Hinton et al., "Distilling the Knowledge in a
        Neural Network", 2015.
    """

    def __init__(self, teacher, student, temperature=1.0, alpha=1.0, augmenter=None,
                 **kwargs):
        super().__init__(**kwargs)
        for name, model in (("teacher", teacher), ("student", student)):
            if not callable(model):
                raise TypeError(f"`{name}` must be a Keras model. Received: {type(model).__name__}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"`alpha` must be a number in [0, 1]. Received: alpha={alpha!r}")
        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.distillation = DistillationLoss(temperature)
        self.temperature = self.distillation.temperature
        self.alpha = float(alpha)
        self.augmenter = augmenter
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.distill_tracker = keras.metrics.Mean(name="distillation_loss")
        self.ce_tracker = keras.metrics.Mean(name="cross_entropy")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.agreement_tracker = keras.metrics.Mean(name="teacher_agreement")
        _check_same_classes(_classes_of(teacher), _classes_of(student))
        build_if_known(self, self.student)

    def build(self, input_shape):
        for model in (self.teacher, self.student):
            if not model.built:
                model.build(input_shape)
        self.built = True

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def fit(self, x=None, y=None, *args, **kwargs):
        quiet_dataset_shuffle(x, kwargs)
        return super().fit(x, y, *args, **kwargs)

    def losses_of(self, x, y, training, sample_weight=None):
        """The loss of this replica's batch (updating the metrics). `y` may be
        None; -1 marks unlabelled; `sample_weight` `[batch]` or None."""
        if training and self.augmenter is not None:
            x = self.augmenter(x, training=True)
        teacher = tf.stop_gradient(tf.cast(self.teacher(x, training=False), tf.float32))
        student = tf.cast(self.student(x, training=training), tf.float32)
        if teacher.shape.rank != 2 or student.shape.rank != 2:
            raise ValueError("DistillationModel needs logits [batch, classes] from both "
                             f"models. Received: teacher {teacher.shape}, student {student.shape}")
        _check_same_classes(teacher.shape[-1], student.shape[-1])
        distill = self.distillation.call(teacher, student)
        w = (tf.ones_like(distill) if sample_weight is None
             else tf.reshape(tf.cast(sample_weight, tf.float32), [-1]))
        distill = tf.reduce_mean(distill * w)
        total = self.alpha * distill
        ce = None
        if y is not None:
            y = tf.reshape(tf.cast(y, tf.int32), [-1])
            labelled = y >= 0
            per = tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.maximum(y, 0), student)
            weight = tf.cast(labelled, tf.float32)
            count = tf.reduce_sum(weight)
            ce = tf.math.divide_no_nan(tf.reduce_sum(per * weight * w), count)
            total += (1.0 - self.alpha) * ce
            hit = tf.cast(tf.equal(tf.argmax(student, -1, output_type=tf.int32), y), tf.float32)
            self.accuracy_tracker.update_state(
                tf.math.divide_no_nan(tf.reduce_sum(hit * weight), count), sample_weight=count)
            self.ce_tracker.update_state(ce, sample_weight=count)
        elif self.alpha < 1:
            raise ValueError(f"`alpha`={self.alpha} < 1 weights a labelled cross-entropy: "
                             "fit on (images, labels), with -1 for unlabelled examples.")
        self.distill_tracker.update_state(distill)
        self.agreement_tracker.update_state(tf.reduce_mean(tf.cast(tf.equal(
            tf.argmax(student, -1), tf.argmax(teacher, -1)), tf.float32)))
        self.loss_tracker.update_state(total)
        return total

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss = self.losses_of(x, y, training=True, sample_weight=sample_weight)
            if self.student.losses:
                loss += tf.add_n([tf.cast(v, tf.float32) for v in self.student.losses])
            # Gradients are summed over replicas: scale each replica's mean.
            scaled = self.optimizer.scale_loss(loss / _cross_replica.num_replicas())
        variables = self.student.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None])
        return self._logs(y)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self.losses_of(x, y, training=False, sample_weight=sample_weight)
        return self._logs(y)

    def _logs(self, y):
        metrics = [self.loss_tracker, self.distill_tracker, self.agreement_tracker]
        if y is not None:
            metrics += [self.ce_tracker, self.accuracy_tracker]
        return {m.name: m.result() for m in metrics}

    @property
    def metrics(self):
        return [self.loss_tracker, self.distill_tracker, self.ce_tracker,
                self.accuracy_tracker, self.agreement_tracker]

    def get_config(self):
        config = super().get_config()
        config.update({"teacher": serialize(self.teacher), "student": serialize(self.student),
                       "temperature": self.temperature, "alpha": self.alpha,
                       "augmenter": serialize(self.augmenter)})
        return config

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config, ["teacher", "student", "augmenter"])
