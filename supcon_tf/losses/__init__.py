"""Contrastive losses. Each is a `keras.losses.Loss` (per-sample values from
`call`, reduced by the Keras base class) with a plain function that does the
maths. `BarlowTwinsLoss` and `VICRegLoss` are statistics of the whole batch
and return one value per batch; `BYOLLoss` is BYOL's and SimSiam's
normalised distance, from Keras's own cosine similarity.
`HardNegativeLoss` is HCL's reweighted negatives (with `beta=0` the debiased
loss). `ProtoNCELoss` is PCL's prototype term for one clustering; `SwAVLoss`
SwAV's swapped prediction of Sinkhorn codes; `NPIDLoss` NPID's NCE / softmax
against a memory bank; `DistillationLoss` SimCLR v2's distillation;
`CMCLoss` Contrastive Multiview Coding's pairwise InfoNCE over M views;
`LooCLoss` LooC's InfoNCE per embedding space (all-invariant and one per
augmentation family); `ConditionalContrastiveLoss` ContraGAN's 2C loss;
`CLIPLoss` CLIP's symmetric cross-modal InfoNCE with a learned scale;
`GraphCLLoss` GraphCL's one-direction loss between two views of graphs;
`HybridMemoryLoss` SpCL's unified loss against class centroids, clusters and
outliers in a hybrid memory; `MiCELoss` MiCE's negative ELBO of a gate over
contrastive experts; `DIMLoss` and `AMDIMLoss` Deep InfoMax's and AMDIM's
local-global mutual information; `CPCLoss` CPC's InfoNCE of predicted patches
against every patch of the batch; `PixProLoss` PixPro's consistency between
nearby locations of two crops.

Every loss runs on each Keras 3 backend (docs/losses.md, "Every Keras
backend").

One contract (`ContrastiveLoss`, losses/base.py): `loss(y_true, y_pred,
sample_weight=None, **inputs)`, where `inputs` are what the loss reads beyond
the embeddings (`queue=`, `queue_labels=`, `extra_negatives=`, `centroids=`,
`z=`, ...), named in its `call`'s signature."""

from supcon_tf.losses.base import ContrastiveLoss
from supcon_tf.losses.byol import BYOLLoss
from supcon_tf.losses.clip import CLIPLoss, clip_loss
from supcon_tf.losses.cmc import CMCLoss, cmc_loss
from supcon_tf.losses.contragan import ConditionalContrastiveLoss, conditional_contrastive_loss
from supcon_tf.losses.cpc import CPCLoss, cpc_loss
from supcon_tf.losses.distillation import DistillationLoss, distillation_loss
from supcon_tf.losses.graphcl import GraphCLLoss, graphcl_loss
from supcon_tf.losses.hard_negative import (HardNegativeLoss, hard_negative_loss,
                                            hard_negative_terms)
from supcon_tf.losses.infomax import AMDIMLoss, DIMLoss, amdim_loss, dim_loss
from supcon_tf.losses.looc import LooCLoss, looc_loss
from supcon_tf.losses.mice import MiCELoss, mice_loss, simplex_prototypes
from supcon_tf.losses.moco import MoCoLoss, moco_loss
from supcon_tf.losses.npid import NPIDLoss, npid_loss
from supcon_tf.losses.pixpro import PixProLoss, pixel_positive_mask, pixpro_loss
from supcon_tf.losses.proto import ProtoNCELoss, proto_nce
from supcon_tf.losses.redundancy import (BarlowTwinsLoss, VICRegLoss, barlow_twins_loss,
                                         vicreg_loss, vicreg_terms)
from supcon_tf.losses.spcl import HybridMemoryLoss, hybrid_memory_loss
from supcon_tf.losses.supcon import SupConLoss, supcon_loss
from supcon_tf.losses.swav import SwAVLoss, swav_loss

__all__ = ["AMDIMLoss", "BYOLLoss", "BarlowTwinsLoss", "CLIPLoss", "CMCLoss", "ConditionalContrastiveLoss", "CPCLoss",
           "ContrastiveLoss", "DIMLoss", "DistillationLoss", "GraphCLLoss",
           "HardNegativeLoss", "HybridMemoryLoss", "LooCLoss", "MiCELoss", "MoCoLoss", "NPIDLoss", "PixProLoss", "ProtoNCELoss", "SupConLoss",
           "SwAVLoss", "VICRegLoss", "amdim_loss", "barlow_twins_loss", "clip_loss", "cmc_loss", "conditional_contrastive_loss", "cpc_loss", "dim_loss", "distillation_loss", "graphcl_loss",
           "hard_negative_loss", "hard_negative_terms", "hybrid_memory_loss", "looc_loss", "mice_loss", "moco_loss", "npid_loss", "pixel_positive_mask", "pixpro_loss", "proto_nce",
           "simplex_prototypes", "supcon_loss", "swav_loss", "vicreg_loss", "vicreg_terms"]
