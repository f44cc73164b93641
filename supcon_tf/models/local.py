"""Local contrastive learning: the encoder trained stage by stage, each
stage by a contrastive loss of its own, no gradient between stages: Greedy
InfoMax's isolated stages (Löwe et al., NeurIPS 2019) and LoCo's overlapping
ones (Xiong, Ren, Urtasun, NeurIPS 2020)."""

import re

import keras
import tensorflow as tf

from supcon_tf.losses import SupConLoss
from supcon_tf.metrics import contrastive_accuracy, output_std
from supcon_tf.models.base import ContrastiveModel
from supcon_tf.models.building import check_two_views, refuse_mixing

_STAGE_END = re.compile(r"^stage(\d+)_block(\d+)_out$")


def stage_boundaries(encoder):
    """The names of the layers that end each stage of a supcon_tf ResNet but
    the last (`stageK_blockJ_out` with the largest J of each K)."""
    last = {}
    for layer in encoder.layers:
        match = _STAGE_END.match(layer.name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            if block >= last.get(stage, (0, ""))[0]:
                last[stage] = (block, layer.name)
    return [last[k][1] for k in sorted(last)][:-1]


def split_stages(encoder, boundaries=None):
    """`encoder` cut at `boundaries` into consecutive Keras models sharing its
    layers: the first from the images to the first boundary's output, the
    next from there to the second's, ..., the last to the encoder's output.

    Args:
        encoder: A functional Keras model (or a `Sequential` with an `Input`).
        boundaries: Layers whose outputs end a stage, by name or by index in
            `encoder.layers`, in order; None: `stage_boundaries(encoder)`
            (supcon_tf's ResNets: four stages, the stem in the first).

    Raises:
        ValueError: no boundary, an unknown one, or boundaries out of order.
    """
    if boundaries is None:
        boundaries = stage_boundaries(encoder)
    layers = list(encoder.layers)
    indices = []
    for b in boundaries:
        if isinstance(b, int) and not isinstance(b, bool):
            index = b
        else:
            names = [layer.name for layer in layers]
            if b not in names:
                raise ValueError(f"`boundaries` names a layer the encoder does not have: {b!r} "
                                 f"(the encoder {encoder.name!r} has {len(layers)} layers)")
            index = names.index(b)
        if not 0 <= index < len(layers) - 1:
            raise ValueError(f"A boundary must be a layer before the encoder's last. Received: "
                             f"{b!r} (index {index} of {len(layers)})")
        indices.append(index)
    if not indices or indices != sorted(set(indices)):
        raise ValueError("Local learning needs at least one boundary, in the order of the "
                         f"encoder's layers. Received: boundaries={list(boundaries)!r}")
    if isinstance(encoder, keras.Sequential):
        # A chain: each stage a Sequential of its layers (a rebuilt
        # Sequential's layers may hold the tensors of an earlier build).
        cuts = [0] + [i + 1 for i in indices] + [len(layers)]
        stages, shape = [], tuple(encoder.inputs[0].shape[1:])
        for k in range(len(cuts) - 1):
            stage = keras.Sequential([keras.Input(shape)] + layers[cuts[k]:cuts[k + 1]],
                                     name=f"{encoder.name}_stage{k + 1}")
            shape = tuple(stage.compute_output_shape((None,) + shape)[1:])
            stages.append(stage)
        return stages
    starts = [encoder.inputs[0]] + [layers[i].output for i in indices]
    ends = [layers[i].output for i in indices] + [encoder.outputs[0]]
    return [keras.Model(a, b, name=f"{encoder.name}_stage{k + 1}")
            for k, (a, b) in enumerate(zip(starts, ends))]


def _pooled(x):
    return tf.reduce_mean(x, axis=[1, 2]) if x.shape.rank == 4 else x


@keras.saving.register_keras_serializable(package="supcon_tf")
class LoCoModel(ContrastiveModel):
    """LoCo and Greedy InfoMax: each local unit of the encoder is trained by
    its own contrastive loss, and no gradient passes from one unit's loss
    into the stages below it.

    The encoder is cut into S stages (`split_stages`). With `overlap=True`
    (LoCo) unit k is stages k and k + 1 (k = 1 .. S - 1): its loss, on its
    top stage's output, trains both, so every stage but the first and last
    learns from two losses, the upper one reaching down one stage. With
    `overlap=False` (Greedy InfoMax) unit k is stage k alone (S units).
    Each unit's output is pooled (a spatial map is averaged) and projected
    by a head of its own (copies of `head`), and the compiled loss
    (`SupConLoss(temperature=0.2)` without labels, SimCLR's NT-Xent, by
    default) scores the two views; the training loss is the units' sum.

    The step runs the units one after the other, each under its own
    gradient tape, with the next unit's input (the current unit's first
    stage's output, stop-gradient) waiting for the current unit's
    gradients: the activations a unit's backward pass needs can be freed
    before the next unit runs, so peak memory is one unit's rather than the
    whole encoder's (what local learning is for). LoCo's overlapping stage
    runs forward twice (once in each unit); its BatchNorm statistics then
    move twice per step.

    Args:
        encoder: A functional encoder (`[batch, F]` features).
        head: The head of every unit (copied per unit, built on its
            stage's channels). Defaults to `ProjectionHead(128)`.
        augmenter, views, probe_classes: As `ContrastiveModel`; `views`
            must be 2.
        overlap: LoCo (True) or Greedy InfoMax (False). Defaults to True.
        boundaries: Where the stages end (`split_stages`). Defaults to
            None: supcon_tf's ResNet stages.

    Metrics: `loss` (the units' sum), `contrastive_accuracy` and
    `output_std` of the top unit, the probe's (on the encoder's features).

    Reference:
        Xiong, Ren, Urtasun, "LoCo: Local Contrastive Representation
        Learning", NeurIPS 2020; Löwe, O'Connor, Veeling, "Putting An End to
        End-to-End: Gradient-Isolated Learning of Representations", NeurIPS 2019.
    """

    method_name = "loco"
    method_title = "Local contrastive learning (LoCo / Greedy InfoMax)"
    labels = "drop"
    supports_imix = False

    def __init__(self, encoder, head=None, augmenter=None, views=2, overlap=True,
                 boundaries=None, probe_classes=None, **kwargs):
        check_two_views("LoCoModel", views)
        refuse_mixing("LoCoModel", kwargs, "its step trains each unit on its own")
        super().__init__(encoder, head=head, augmenter=augmenter, views=views,
                         probe_classes=probe_classes, **kwargs)
        self.overlap = bool(overlap)
        self.boundaries = None if boundaries is None else list(boundaries)
        self.stages = split_stages(self.encoder, self.boundaries)
        if self.overlap and len(self.stages) < 2:
            raise ValueError("LoCo's units overlap by a stage: it needs at least two stages.")
        count = len(self.stages) - 1 if self.overlap else len(self.stages)
        self.units = [(k, k + 1) if self.overlap else (k,) for k in range(count)]
        config = self.head.get_config()
        # The top unit's head is `head` itself; the others are copies.
        self.unit_heads = [type(self.head).from_config({**config, "name": f"unit{k + 1}_head"})
                           for k in range(count - 1)] + [self.head]

    def build(self, input_shape):
        super().build(input_shape)
        shape, channels = (None,) + tuple(input_shape[-3:]), []
        for stage in self.stages:
            shape = stage.compute_output_shape(shape)
            channels.append(shape[-1])
        for (*_, top), head in zip(self.units, self.unit_heads):
            if not head.built:
                head.build((None, channels[top]))

    def default_loss(self):
        return SupConLoss(temperature=0.2)

    def _unit_outputs(self, unit, x, training):
        """The unit's stages on `x`: `(output of its first stage, pooled
        output of its top stage)`."""
        first = h = self.stages[unit[0]](x, training=training)
        for s in unit[1:]:
            h = self.stages[s](h, training=training)
        return first, _pooled(h)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        views = self.make_views(x)
        shape = tf.shape(views)
        batch = shape[0]
        h = tf.reshape(views, tf.concat([[batch * 2], shape[2:]], 0))
        pairs, total = [], 0.0
        for k, (unit, head) in enumerate(zip(self.units, self.unit_heads)):
            variables = [v for s in unit for v in self.stages[s].trainable_variables]
            variables += head.trainable_variables
            with tf.GradientTape() as tape:
                first, top = self._unit_outputs(unit, tf.stop_gradient(h), True)
                projections = tf.reshape(head(top, training=True), [batch, 2, -1])
                loss = self.loss(None, projections, sample_weight=sample_weight)
                scaled = self.optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, variables)
            pairs += [(g, v) for g, v in zip(grads, variables) if g is not None]
            total += loss
            # The next unit starts once this one's gradients exist.
            with tf.control_dependencies([g for g in grads if g is not None]):
                h = tf.identity(first)
        features = tf.reshape(top, [batch, 2, -1])
        probe_loss = None
        if self.probe is not None and y is not None:
            with tf.GradientTape() as tape:
                probe_loss = self.probe_loss(y, {"features": tf.stop_gradient(features)})
                scaled = self.optimizer.scale_loss(probe_loss)
            probe_vars = self.probe.trainable_variables
            pairs += list(zip(tape.gradient(scaled, probe_vars), probe_vars))
        self.apply_gradients(self._summed(pairs))
        out = {"features": features, "projections": projections}
        self.update_metrics(None, out)
        self.output_std_tracker.update_state(output_std(projections[:, 0]))
        return self._logs(total, None if probe_loss is None else y, out, sample_weight)

    @staticmethod
    def _summed(pairs):
        """One `(gradient, variable)` per variable: a stage two units train
        gets the sum of their gradients."""
        by_var, order = {}, []
        for g, v in pairs:
            if id(v) in by_var:
                by_var[id(v)] = (by_var[id(v)][0] + g, v)
            else:
                by_var[id(v)] = (g, v)
                order.append(id(v))
        return [by_var[i] for i in order]

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        views = self.make_views(x)
        shape = tf.shape(views)
        h = tf.reshape(views, tf.concat([[shape[0] * 2], shape[2:]], 0))
        total = 0.0
        for unit, head in zip(self.units, self.unit_heads):
            first, top = self._unit_outputs(unit, h, False)
            projections = tf.reshape(head(top, training=False), [shape[0], 2, -1])
            total += self.loss(None, projections, sample_weight=sample_weight)
            h = first
        out = {"features": tf.reshape(top, [shape[0], 2, -1]), "projections": projections}
        if self.probe is not None and y is not None:
            self.probe_loss(y, out)
        self.update_metrics(None, out)
        self.output_std_tracker.update_state(output_std(projections[:, 0]))
        return self._logs(total, y, out, sample_weight)

    def update_metrics(self, y, out):
        self.contrastive_accuracy_tracker.update_state(
            contrastive_accuracy(None, out["projections"]))

    def get_config(self):
        return {**super().get_config(), "overlap": self.overlap, "boundaries": self.boundaries}
