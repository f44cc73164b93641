"""Barlow Twins and VICReg: both views through one network, and a loss of
the (global) batch's statistics instead of negatives."""

import keras

from supcon_tf.heads import barlow_twins_projector, vicreg_expander
from supcon_tf.losses import BarlowTwinsLoss, VICRegLoss
from supcon_tf.models.base import ContrastiveModel, check_two_views


@keras.saving.register_keras_serializable(package="supcon_tf")
class BarlowTwinsModel(ContrastiveModel):
    """Barlow Twins: the cross-correlation of the two views' embeddings over
    the (global) batch is pushed to the identity (`BarlowTwinsLoss`).

    Both views go through the encoder and projector (`head`) in one pass; the
    compiled loss (`BarlowTwinsLoss(lambda_)` when `compile` gets none)
    receives the embeddings `[batch, 2, dim]`, which are not L2-normalised.
    Labels, when given, feed only the online probe. Under `tf.distribute` the
    loss's statistics are the global batch's; use `synchronized_bn` heads
    and encoders for the BatchNorm statistics too.

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        head: The projector. Defaults to None: `layers.barlow_twins_projector()`
            (8192-8192-8192; scale it to small encoders).
        augmenter: A Keras layer making each view, or None. Defaults to None.
        views: Must be 2. Defaults to 2.
        lambda_: The default loss's off-diagonal weight. Defaults to 0.0051.
        probe_classes: Classes of an online linear probe, or None. Defaults to None.

    Reference:
        Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy
        Reduction", ICML 2021.
    """

    supports_imix = False          # a statistic of the batch: no per-sample loss
    min_batch = 2                  # it standardises over the batch

    method_name = "barlow"
    method_title = "Redundancy reduction (Barlow Twins)"
    labels = "probe"
    head_options = {"normalize": False, "output_bias": False}

    def __init__(self, encoder, head=None, augmenter=None, views=2, lambda_=0.0051,
                 probe_classes=None, **kwargs):
        check_two_views("BarlowTwinsModel", views)
        head = head if head is not None else barlow_twins_projector()
        super().__init__(encoder, head=head, augmenter=augmenter, views=views,
                         probe_classes=probe_classes, **kwargs)
        self.lambda_ = BarlowTwinsLoss(lambda_).lambda_          # checked there

    def default_loss(self):
        return BarlowTwinsLoss(self.lambda_)

    def get_config(self):
        return {**super().get_config(), "lambda_": self.lambda_}


@keras.saving.register_keras_serializable(package="supcon_tf")
class VICRegModel(ContrastiveModel):
    """VICReg: invariance between the two views' embeddings, with the
    variance and covariance of each branch over the (global) batch held in
    check (`VICRegLoss`).

    Both views go through the encoder and expander (`head`) in one pass; the
    compiled loss (`VICRegLoss(sim_coeff, std_coeff, cov_coeff)` when
    `compile` gets none) receives `[batch, 2, dim]`, not L2-normalised.
    Labels, when given, feed only the online probe.

    Args:
        encoder: A Keras model from images to `[batch, features]`.
        head: The expander. Defaults to None: `layers.vicreg_expander()`
            (8192-8192-8192; scale it to small encoders).
        augmenter: A Keras layer making each view, or None. Defaults to None.
        views: Must be 2. Defaults to 2.
        sim_coeff, std_coeff, cov_coeff: The default loss's weights.
            Default to 25, 25 and 1.
        probe_classes: Classes of an online linear probe, or None. Defaults to None.

    Reference:
        Bardes et al., "VICReg: Variance-Invariance-Covariance Regularization
        for Self-Supervised Learning", ICLR 2022.
    """

    supports_imix = False
    min_batch = 2

    method_name = "vicreg"
    method_title = "Variance-invariance-covariance regularization (VICReg)"
    labels = "probe"
    head_options = {"normalize": False, "output_bias": False}

    def __init__(self, encoder, head=None, augmenter=None, views=2, sim_coeff=25.0,
                 std_coeff=25.0, cov_coeff=1.0, probe_classes=None, **kwargs):
        check_two_views("VICRegModel", views)
        head = head if head is not None else vicreg_expander()
        super().__init__(encoder, head=head, augmenter=augmenter, views=views,
                         probe_classes=probe_classes, **kwargs)
        checked = VICRegLoss(sim_coeff, std_coeff, cov_coeff)
        self.sim_coeff, self.std_coeff, self.cov_coeff = (
            checked.sim_coeff, checked.std_coeff, checked.cov_coeff)

    def default_loss(self):
        return VICRegLoss(self.sim_coeff, self.std_coeff, self.cov_coeff)

    def get_config(self):
        return {**super().get_config(), "sim_coeff": self.sim_coeff,
                "std_coeff": self.std_coeff, "cov_coeff": self.cov_coeff}
