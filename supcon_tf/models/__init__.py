"""Models of the contrastive family and the classifiers of the second stage.

`ContrastiveModel` (models/base.py) holds what every method shares; each
method is a short subclass: `SupConModel` (SupCon / SimCLR), `MoCoModel`
(MoCo v2, and SupCon with a labelled queue). `LinearClassifier` and
`CrossEntropyClassifier` put a linear layer on an encoder.
"""

from supcon_tf.metrics import contrastive_accuracy
from supcon_tf.models.base import ContrastiveModel
from supcon_tf.models.classifiers import CrossEntropyClassifier, LinearClassifier
from supcon_tf.models.moco import MoCoModel
from supcon_tf.models.supcon import SupConModel

__all__ = ["ContrastiveModel", "CrossEntropyClassifier", "LinearClassifier",
           "MoCoModel", "SupConModel", "contrastive_accuracy"]
