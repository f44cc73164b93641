"""InfoMin's view learning on Fashion-MNIST, two runs (the paper's protocol).

Stage one learns the views: a volume-preserving flow of the image and its
gradient magnitude (CMC's two signals) makes two one-channel views, trained
against the two views' encoders (min over the flow, max over the encoders
of the CMC loss). `--config.model.label_weight=1` is the semi-supervised
variant (a classifier per view keeps the label's information).

    python examples/pretrain.py --config configs/fashion_mnist/infomin_views.py \\
        --model_dir runs/infomin_views

Stage two trains fresh encoders by CMC on the learned views, the flow frozen:

    python examples/pretrain.py --config configs/fashion_mnist/infomin_views.py \\
        --config.model.adversarial=False \\
        --config.model.views_from=runs/infomin_views/encoder.keras --model_dir runs/infomin_cmc

Everything else is the CMC recipe (configs/fashion_mnist/cmc.py): a crop
per view, a ResNet-18 at half the budget's width per view, linear heads to
128, core graph at temperature 0.07. The recipe's keys: docs/methods.md.
"""

import os
import runpy

import ml_collections
from ml_collections.config_dict import placeholder

# The budget shared by these configs (a file beside this one).
with_budget = runpy.run_path(os.path.join(os.path.dirname(__file__), "budget.py"))["with_budget"]


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "infomin"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=128, hidden_dims=placeholder(tuple))
    c.model = dict(signals=("image", "gradient"), crops="independent", flow_steps=4,
                   flow_hidden=16, adversarial=True, label_weight=0.0,
                   views_from=placeholder(str))
    c.loss = dict(name="CMCLoss", temperature=0.07, graph="core")
    c = with_budget(c)
    c.encoder.width = 0.0625
    return c
