"""SwAV on Fashion-MNIST: the zoo's fashion_mnist_resnet18_swav.

Multi-crop: `--config.model.small_views=4` (crops of `small_crop_size` pixels).

    python examples/pretrain.py --config configs/fashion_mnist/swav.py --model_dir runs/swav

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
    c.method = "swav"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=128, hidden_dims=(512,))
    c.model = dict(num_prototypes=300, temperature=0.1, epsilon=0.05, queue_size=1920,
                   queue_start_epoch=5, freeze_prototypes_steps=468, prototype_seed=0,
                   small_views=0, small_crop_size=14, small_crop_scale=(0.05, 0.3))
    return with_budget(c)
