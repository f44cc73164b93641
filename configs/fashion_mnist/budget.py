"""The recipe budget of docs/RESULTS.md, shared by the Fashion-MNIST configs:
ResNet-18 at width 0.125, 42 epochs at batch 128, AdamW (lr 2e-3, weight
decay 1e-4, 0.5 warm-up epochs, cosine decay), seed 0. Not a config itself."""

from ml_collections.config_dict import placeholder


def with_budget(c, jit_compile="auto"):
    """`c` (a ConfigDict holding the method's own keys) with the budget's."""
    c.encoder = dict(name="resnet18", width=0.125, synchronized_bn=placeholder(bool))
    c.optimizer = dict(name="adamw", lr=2e-3, weight_decay=1e-4, warmup_epochs=0.5)
    c.epochs = 42
    c.batch_size = 128
    c.data = dict(dataset="fashion_mnist", train_size=placeholder(int),
                  long_tailed_ratio=placeholder(float), long_tailed_profile="exponential")
    c.seed = 0
    c.jit_compile = jit_compile
    c.mixed_precision = "none"
    c.distribute = "none"
    return c
