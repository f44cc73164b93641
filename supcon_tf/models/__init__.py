"""Models of the contrastive family and the classifiers of the second stage.

`ContrastiveModel` (models/base.py) holds what every method shares and
`MomentumModel` (models/momentum_model.py) adds a momentum target network; each
method is a short subclass: `SupConModel` (SupCon; SimCLR without labels), `SimCLRModel` (SimCLR, labels for the probe only), `MoCoModel`
(MoCo v2, and SupCon with a labelled queue: `SupConQueueModel`), `BYOLModel`, `SimSiamModel`,
`BarlowTwinsModel`, `VICRegModel`, `NPIDModel` (a memory bank of the
dataset), `PCLModel` (MoCo with ProtoNCE; `PCLClustering` re-clusters), `SwAVModel`
(swapped prediction of Sinkhorn codes over prototypes), `CMCModel` (Contrastive
Multiview Coding: a network per signal of the image), `InfoMinModel` (CMC on
views a flow learns adversarially), `LooCModel` (an embedding space per
augmentation family, and one invariant to all), `SpCLModel` (a hybrid
memory of labelled classes and unlabelled samples; `SpCLClustering`
re-clusters them each epoch), `MiCEModel` (a gate over contrastive experts:
the clustering is its posterior), `DIMModel` (Deep InfoMax's and AMDIM's
global-to-local mutual information), `PixProModel` (PixPro: each location of
one crop regresses the nearby locations of the other), `CPCModel` (CPC v2: a
grid of patches, a masked context predicting the patches below and above),
`LoCoModel` (LoCo and Greedy InfoMax: each stage of the encoder trained by
a loss of its own). `LinearClassifier` and
`CrossEntropyClassifier` put a linear layer on an encoder; SimCLR v2's
few-label recipe adds `FineTuneClassifier` (fine-tuning from a layer of the
projection head) and `DistillationModel` (models/semi_supervised.py).
"""

from supcon_tf.metrics import contrastive_accuracy
from supcon_tf.models.base import ContrastiveModel
from supcon_tf.models.byol import BYOLModel, SimSiamModel
from supcon_tf.models.cmc import CMCModel, MultiViewHead
from supcon_tf.models.cpc import CPCModel
from supcon_tf.models.dim import DIMModel
from supcon_tf.models.infomin import InfoMinModel
from supcon_tf.models.local import LoCoModel, split_stages, stage_boundaries
from supcon_tf.models.looc import LooCModel
from supcon_tf.models.mice import MiCEModel
from supcon_tf.models.classifiers import CrossEntropyClassifier, LinearClassifier
from supcon_tf.models.moco import MoCoModel, SupConQueueModel
from supcon_tf.models.npid import NPIDModel
from supcon_tf.models.pixpro import PixProModel
from supcon_tf.models.pcl import PCLClustering, PCLModel
from supcon_tf.models.redundancy import BarlowTwinsModel, VICRegModel
from supcon_tf.models.spcl import SpCLClustering, SpCLModel
from supcon_tf.models.semi_supervised import DistillationModel, FineTuneClassifier
from supcon_tf.models.supcon import SimCLRModel, SupConModel
from supcon_tf.models.swav import SwAVModel
from supcon_tf.models.momentum_model import MomentumModel

__all__ = ["BYOLModel", "BarlowTwinsModel", "CMCModel", "CPCModel", "DIMModel", "MultiViewHead", "ContrastiveModel", "CrossEntropyClassifier",
           "DistillationModel", "FineTuneClassifier", "InfoMinModel", "LinearClassifier", "LoCoModel", "LooCModel", "MiCEModel", "MoCoModel",
           "MomentumModel", "NPIDModel", "PCLClustering", "PCLModel", "PixProModel", "SimCLRModel",
           "SimSiamModel", "SpCLClustering", "SpCLModel", "SupConModel", "SupConQueueModel", "SwAVModel", "VICRegModel",
           "contrastive_accuracy", "split_stages", "stage_boundaries"]
