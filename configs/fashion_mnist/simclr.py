"""SimCLR on Fashion-MNIST: the zoo's fashion_mnist_resnet18_simclr.

    python examples/pretrain.py --config configs/fashion_mnist/simclr.py --model_dir runs/simclr

Override any value on the command line, e.g. `--config.optimizer.lr=4e-3`.
The recipe's keys: docs/methods.md (supcon_tf.methods.DEFAULTS).
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "simclr"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=128, hidden_dims=(512,))
    c.model = dict(views=2, imix=placeholder(str), imix_alpha=1.0, adversarial_eps=0.0, adversarial_weight=1.0)
    c.loss = dict(name="SupConLoss", temperature=0.2)
    # The recipe budget of docs/RESULTS.md.
    c.encoder = dict(name="resnet18", width=0.125, synchronized_bn=placeholder(bool))
    c.optimizer = dict(name="adamw", lr=2e-3, weight_decay=1e-4, warmup_epochs=0.5)
    c.epochs = 42
    c.batch_size = 128
    c.data = dict(dataset="fashion_mnist", train_size=placeholder(int),
                  long_tailed_ratio=placeholder(float), long_tailed_profile="exponential")
    c.seed = 0
    c.jit_compile = "auto"
    c.mixed_precision = "none"
    c.distribute = "none"
    return c
