"""The cross-entropy baseline on Fashion-MNIST: the zoo's fashion_mnist_resnet18_ce.
The same encoder, augmentation and budget as the contrastive recipes, trained
end to end with softmax cross-entropy by examples/train_ce.py.

    python examples/train_ce.py --config configs/fashion_mnist/ce.py --model_dir runs/ce

Override any value on the command line, e.g. `--config.epochs=12`;
`--config.augment.recipe=none` trains without augmentation.
"""

import os
import runpy

import ml_collections
from ml_collections.config_dict import placeholder

# The budget shared by these configs (a file beside this one).
with_budget = runpy.run_path(os.path.join(os.path.dirname(__file__), "budget.py"))["with_budget"]


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "ce"
    c.augment = dict(recipe="supcon", crop_min_scale=0.5, color_strength=placeholder(float))
    return with_budget(c)
