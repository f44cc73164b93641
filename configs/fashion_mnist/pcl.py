"""PCL (MoCo with ProtoNCE over k-means prototypes) on Fashion-MNIST:
the zoo's fashion_mnist_resnet18_pcl.

    python examples/pretrain.py --config configs/fashion_mnist/pcl.py --model_dir runs/pcl

Override any value on the command line, e.g. `--config.optimizer.lr=4e-3`.
The recipe's keys: docs/methods.md (supcon_tf.methods.DEFAULTS).
"""

import os
import runpy

import ml_collections
from ml_collections.config_dict import placeholder

# The budget shared by these configs (a file beside this one).
with_budget = runpy.run_path(os.path.join(os.path.dirname(__file__), "budget.py"))["with_budget"]


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "pcl"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=128, hidden_dims=(512,))
    c.model = dict(num_clusters=(10, 20, 50), warmup_epochs=4,
                   num_prototype_negatives=16000, queue_size=4096, momentum=0.99,
                   temperature=0.2, bn_groups=2)
    return with_budget(c)
