"""MoCo v2 on Fashion-MNIST: the zoo's fashion_mnist_resnet18_moco.

MoCHi: `--config.model.mochi_n=1024`; SupCon with a labelled queue:
`--config.method=supcon_queue`.

    python examples/pretrain.py --config configs/fashion_mnist/moco.py --model_dir runs/moco

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
    c.method = "moco"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=128, hidden_dims=(512,))
    c.model = dict(queue_size=4096, momentum=0.99, momentum_schedule="constant",
                   temperature=0.2, symmetric=False, bn_groups=2, mochi_n=placeholder(int),
                   mochi_s=1024, mochi_s_prime=256, mochi_start_epoch=0,
                   imix=placeholder(str), imix_alpha=1.0, adversarial_eps=0.0, adversarial_weight=1.0)
    return with_budget(c)
