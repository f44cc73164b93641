"""`MomentumModel`: a `ContrastiveModel` with a momentum (EMA) copy of its
encoder and head, the target network of MoCo and BYOL."""

from supcon_tf.models.base import ContrastiveModel, feature_shape
from supcon_tf.momentum import (check_momentum, copy_network, ema_update, freeze_as_target,
                                momentum_at, weight_pairs)


class MomentumModel(ContrastiveModel):
    """A `ContrastiveModel` whose `target_encoder` and `target_head` follow the
    online ones: after each optimizer step, `target <- m target + (1 - m)
    online` (`supcon_tf.momentum`), with `m` constant or rising to 1 along a
    cosine over the steps `fit` plans. The targets start as copies of the
    online networks, are never trained, and use batch statistics in BatchNorm
    while training. They and the planned step count are Keras variables:
    `.keras` files and `BackupAndRestore` keep them.

    Subclasses call `self.encode(views, training, self.target_encoder,
    self.target_head)` for the targets and `super().after_step(y, out)` (or
    `update_targets()`) after each step.

    Args:
        encoder, head, augmenter, views, probe_classes: As `ContrastiveModel`.
        momentum: The targets' momentum `m` in [0, 1] (at the start, for
            the cosine schedule).
        momentum_schedule: `"constant"` or `"cosine"` (BYOL's: from
            `momentum` to 1 over the steps of `fit`).
    """

    def __init__(self, encoder, head=None, augmenter=None, views=2, momentum=0.99,
                 momentum_schedule="constant", probe_classes=None, **kwargs):
        super().__init__(encoder, head=head, augmenter=augmenter, views=views,
                         probe_classes=probe_classes, **kwargs)
        self.momentum = check_momentum(momentum, momentum_schedule)
        self.momentum_schedule = momentum_schedule
        self.target_encoder = copy_network(self.encoder)
        self.target_head = copy_network(self.head)
        self.planned_steps = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                             trainable=False, name="planned_steps")
        self.schedule_start = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                              trainable=False, name="schedule_start")

    def build(self, input_shape):
        super().build(input_shape)
        features = feature_shape(self.target_encoder, input_shape)
        if not self.target_head.built:
            self.target_head.build(features)
        self.target_encoder.set_weights(self.encoder.get_weights())
        self.target_head.set_weights(self.head.get_weights())
        freeze_as_target(self.target_encoder)
        freeze_as_target(self.target_head)

    def on_fit_begin(self, epochs, steps_per_epoch, initial_epoch=0):
        super().on_fit_begin(epochs, steps_per_epoch, initial_epoch)
        if self.momentum_schedule == "cosine":
            if not epochs or not steps_per_epoch:
                raise ValueError(
                    "momentum_schedule='cosine' needs the number of steps: pass "
                    "`steps_per_epoch` to fit, or a dataset of known cardinality. "
                    f"Received: epochs={epochs}, steps_per_epoch={steps_per_epoch}")
            self.planned_steps.assign(int(epochs) * int(steps_per_epoch))
            self.schedule_start.assign(self.fit_start_step(initial_epoch, steps_per_epoch))

    def current_momentum(self):
        """The momentum of this step (a float32 tensor): the schedule counts
        the steps of the current `fit` call (continued after a resume)."""
        return momentum_at(self.optimizer.iterations - self.schedule_start, self.planned_steps,
                           self.momentum, self.momentum_schedule)

    def load_own_variables(self, store):
        # `.keras` files written before `schedule_start` existed hold one
        # variable fewer: load the others in their order, and the schedule
        # counts from step 0 as it did then.
        own = self._trainable_variables + self._non_trainable_variables
        if len(store.keys()) == len(own) - 1:
            rest = [v for v in own if v is not self.schedule_start]
            for i, variable in enumerate(rest):
                variable.assign(store[f"{i}"])
            return
        super().load_own_variables(store)

    def update_targets(self):
        """Moves the target networks towards the online ones (replica-safe)."""
        ema_update(weight_pairs(self.target_encoder, self.encoder)
                   + weight_pairs(self.target_head, self.head), self.current_momentum())

    def after_step(self, y, out):
        self.update_targets()

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum,
                "momentum_schedule": self.momentum_schedule}
