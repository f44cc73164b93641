"""SupCon and SimCLR: every view of the batch against every other view."""

import keras

from supcon_tf.losses import SupConLoss
from supcon_tf.models.base import ContrastiveModel


@keras.saving.register_keras_serializable(package="supcon_tf")
class SupConModel(ContrastiveModel):
    """Encoder + projection head trained with a contrastive loss.

    `fit` on `(images, labels)` trains supervised (SupCon); on `images` alone it
    trains self-supervised (SimCLR). Each batch is turned into `views`
    augmented views by `augmenter` inside the model (on the accelerator), or
    arrives with its views already made by the input pipeline as
    `[batch, views, H, W, C]` (e.g. `ds.map(lambda x, y: (MultiView(aug)(x), y))`).
    All views go through the encoder as one batch; the compiled loss
    (`SupConLoss()` when `compile` gets none) receives `[batch, views, dim]`.

    Metrics: `loss`; `contrastive_accuracy` (how often an anchor's nearest
    other view is a positive); with `probe_classes` and labels, an online
    linear probe on stop-gradient features reports `probe_loss` and
    `probe_accuracy`. `evaluate` (`test_step`) reports the same on augmented views.

    Calling the model on `[batch, H, W, C]` returns the L2-normalised
    projection `[batch, dim]`; on `[batch, views, H, W, C]`, `[batch, views, dim]`.

    Args:
        encoder: A Keras model from images to `[batch, features]`, e.g.
            `supcon_tf.encoders.resnet18(input_shape)`.
        head: The projection head. Defaults to None: `ProjectionHead(128)`.
        augmenter: A Keras layer applied independently to each view, e.g.
            `supcon_tf.augment.supcon(image_shape)`. Defaults to None (views
            come from the input pipeline).
        views: Number of views per image when `augmenter` is given. Defaults to 2.
        probe_classes: Number of classes of an online linear probe, or None for
            no probe. Defaults to None.

    Example:

    >>> import supcon_tf as sct
    >>> enc = sct.encoders.resnet18((28, 28, 1), width=0.125)
    >>> model = SupConModel(enc, augmenter=sct.augment.supcon((28, 28, 1)))
    >>> model.compile(optimizer="adam")  # SupConLoss() by default
    >>> x = keras.ops.zeros((8, 28, 28, 1))
    >>> model.fit(x, keras.ops.zeros((8,), "int32"), verbose=0)  # doctest: +SKIP

    Reference:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.
    """

    method_name = "supcon"
    method_title = "Supervised contrastive (SupCon)"

    def __init__(self, encoder, head=None, augmenter=None, views=2,
                 probe_classes=None, **kwargs):
        super().__init__(encoder, head=head, augmenter=augmenter, views=views,
                         probe_classes=probe_classes, **kwargs)

    def default_loss(self):
        return SupConLoss()


@keras.saving.register_keras_serializable(package="supcon_tf")
class SimCLRModel(SupConModel):
    """SimCLR: `SupConModel` whose loss never sees labels.

    Each view's only positives are the other views of its image (NT-Xent),
    whether `fit` gets labels or not; labels, when given, reach only the
    online probe (`probe_classes`). Takes the arguments of `SupConModel`.

    Reference:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual
        Representations", ICML 2020.
    """

    method_name = "simclr"
    method_title = "Self-supervised contrastive (SimCLR)"
    labels = "drop"

    def contrastive_loss(self, x, y, out, sample_weight, training):
        return super().contrastive_loss(x, None, out, sample_weight, training)

    def update_metrics(self, y, out):
        super().update_metrics(None, out)
