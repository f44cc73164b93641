"""One SupCon training step, supcon_tf against the PyTorch reference, side by side.

    pip install torch==2.13.0        # CPU build; benchmark only, never a dependency
    python benchmarks/train_vs_torch.py [--batch 128] [--width 0.125] [--steps 20]
        [--rounds 3] [--threads 2] [--variants tf,tf-bf16,...,torch-cl-bf16]
        [--reference_losses PATH/TO/SupContrast/losses.py]
    python benchmarks/train_vs_torch.py --convs     # the convolutions alone

The same model in both frameworks: the CIFAR-stem ResNet-18 of SupCon's
reference code (HobbitLong/SupContrast, networks/resnet_big.py: 3x3 stem conv,
no max-pool, basic blocks, BatchNorm, global average pooling) with every
layer's channels times --width (8-16-32-64 at 0.125), on 28x28x1 images; the
reference's "mlp" head (Linear(64, 64) -> ReLU -> Linear(64, 128), no
BatchNorm), L2-normalised; the supervised SupCon loss at temperature 0.1 on
--batch images x 2 views with 10 classes; AdamW (lr 2e-3, weight decay 1e-4,
decoupled in both). The views are made beforehand and held in memory, so no
input pipeline or augmentation is timed, only the step: forward on both views
as one batch of 2 x --batch, the loss, backward, the optimizer update.

- supcon_tf runs the step as a user does: `SupConModel.fit` (with its
  contrastive-accuracy and output-std metrics), `jit_compile=False` unless the
  variant says otherwise.
- PyTorch runs the reference's training loop (`torch.cat` of the two views,
  model, `torch.split`, loss, `zero_grad`/`backward`/`step`) with SupCon's
  reference loss: by default a transcription of HobbitLong/SupContrast's
  `SupConLoss` (dense masks, the max subtracted, `log(sum(exp))`); with
  --reference_losses, that file's own `SupConLoss` is imported and used.

Variants (each in a process of its own with the same --threads for oneDNN,
OpenMP and both frameworks' thread pools; all timed --rounds times,
interleaved, median reported):

    tf            SupConModel.fit, float32 (the library's defaults)
    tf-bf16       ... under keras.mixed_precision "mixed_bfloat16" (loss in float32)
    tf-xla        ... with jit_compile=True: XLA on the whole step (the
                  default compiles only the loss's element-wise pass with XLA)
    tf-bf16-xla   ... both: mixed_bfloat16 with XLA on the whole step
    tf-nodnn      ... with TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's own kernels)
    tf-nometrics  ... without the contrastive-accuracy metric: the most that
                  fusing it into the loss pass could save
    tf-fusedbn    ... with every BatchNormalization replaced by one on TensorFlow's
                  fused kernel (tf.compat.v1.nn.fused_batch_norm; same values);
                  tf-fusedbn-xla adds jit_compile=True
    tf-kerasconv  ... with keras.layers.Conv2D instead of the encoders' own
                  supcon_tf.encoders.Conv2D (same values; Keras's input gradient,
                  TensorFlow's Conv2DBackpropInput, for every convolution);
                  tf-kerasconv-xla adds jit_compile=True
    tf-nobn       ... with no BatchNormalization at all: not the same model, only
                  the bound on what any BatchNorm kernel could save
    tf-mirrored2  ... under MirroredStrategy over 2 logical CPU devices (the
                  global batch split in two; both share the same --threads), and
    tf-mirrored2-nometrics the same without the contrastive-accuracy metric,
                  whose all-gather of the projections is the second one of the
                  step (the loss gathers them too): the difference is what
                  sharing one gather could save at most
    (the last seven are experiments, not in the default list; the
    fused BatchNorm layer is defined in this file only)
    torch         eager, NCHW, float32
    torch-cl      eager, channels_last, float32
    torch-cl-bf16 eager, channels_last, torch.autocast(bfloat16) around the
                  network (the loss in float32, as supcon_tf does)
    torch-compile torch.compile (inductor) of the model and the loss,
                  channels_last, float32 (not in the default list: compiling
                  takes minutes on 2 cores; add it with --variants)

Images/s counts samples (each sample is 2 views, so the encoder sees twice as
many images). The ratio column is supcon_tf's rate over the fastest PyTorch
variant measured in the same run, at the same precision class (float32
against float32, bfloat16 against bfloat16).
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = ("tf", "tf-bf16", "tf-xla", "tf-bf16-xla", "tf-nodnn", "tf-nometrics", "tf-inter1",
            "tf-fusedbn", "tf-fusedbn-xla", "tf-kerasconv", "tf-kerasconv-xla", "tf-nobn",
            "tf-mirrored2", "tf-mirrored2-nometrics", "torch",
            "torch-cl", "torch-cl-bf16", "torch-compile")
DEFAULT_VARIANTS = ("tf", "tf-bf16", "tf-xla", "tf-bf16-xla", "tf-nodnn", "tf-nometrics", "tf-inter1", "torch",
                    "torch-cl", "torch-cl-bf16")
TEMPERATURE = 0.1
CLASSES = 10


def data(batch, steps, seed=0):
    """`steps` batches of 2 views of uint8-valued float images, NHWC, and labels."""
    import numpy as np
    rng = np.random.default_rng(seed)
    views = rng.integers(0, 256, (steps, batch, 2, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, CLASSES, (steps, batch)).astype("int64")
    return views, labels


# -- supcon_tf ---------------------------------------------------------------------


def experimental_layers():
    """The layer of the tf-fusedbn experiment (defined here so that keras and
    tensorflow are imported in the worker only)."""
    import keras
    import tensorflow as tf

    class FusedBatchNorm(keras.layers.Layer):
        """BatchNormalization(momentum=0.9, epsilon=1e-5) on the fused kernel."""

        def __init__(self, momentum=0.9, epsilon=1e-5, **kwargs):
            super().__init__(**kwargs)
            self.momentum, self.epsilon = momentum, epsilon

        def build(self, shape):
            c = shape[-1]
            self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
            self.moving_mean = self.add_weight(shape=(c,), initializer="zeros",
                                               trainable=False, name="moving_mean")
            self.moving_variance = self.add_weight(shape=(c,), initializer="ones",
                                                   trainable=False, name="moving_variance")

        def call(self, x, training=None):
            if training:
                y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                    x, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
                m = self.momentum
                self.moving_mean.assign(m * self.moving_mean + (1 - m) * mean)
                self.moving_variance.assign(m * self.moving_variance + (1 - m) * variance)
                return y
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, self.gamma, self.beta, mean=self.moving_mean,
                variance=self.moving_variance, epsilon=self.epsilon, is_training=False)
            return y

    return FusedBatchNorm


def check_same_values(FusedBatchNorm):
    """Raises unless the experimental layer gives Keras's BatchNormalization's
    outputs and gradients (input and weights) on a small random batch."""
    import numpy as np
    import keras
    import tensorflow as tf

    x = tf.random.stateless_normal((8, 9, 9, 5), seed=(1, 2)) * 3 + 1
    pairs = [(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5), FusedBatchNorm())]
    for reference, experiment in pairs:
        results = []
        reference.build(x.shape)
        for v in reference.trainable_weights:
            v.assign(v + tf.random.stateless_normal(v.shape, seed=(3, 4)))
        experiment.build(x.shape)
        for layer in (reference, experiment):
            for w, v in zip(layer.trainable_weights, reference.trainable_weights):
                w.assign(v)
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * tf.random.stateless_normal(y.shape, seed=(5, 6)))
            results.append([y] + tape.gradient(loss, [x] + layer.trainable_weights))
        for a, b in zip(*results):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4,
                                       err_msg=type(experiment).__name__)


def patch_encoder_layers(variant):
    """Swaps the layers supcon_tf.encoders builds ResNets from (its private
    `_bn`/`_conv` helpers: a benchmark-only experiment, not an API)."""
    import keras

    import supcon_tf as sct
    if variant.startswith("tf-fusedbn"):
        FusedBatchNorm = experimental_layers()
        check_same_values(FusedBatchNorm)
        sct.encoders.backbones._bn = lambda name, synchronized: FusedBatchNorm(name=name)
    elif variant == "tf-nobn":
        sct.encoders.backbones._bn = lambda name, synchronized: keras.layers.Identity(name=name)
    elif variant.startswith("tf-kerasconv"):
        def keras_conv(filters, kernel, stride, name):
            return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                                       use_bias=False, kernel_initializer="he_normal",
                                       name=name)
        sct.encoders.backbones._conv = keras_conv


def run_tf(args, variant):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    import supcon_tf as sct
    from train import _EpochTimer  # benchmarks/train.py

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(
        1 if variant == "tf-inter1" else args.threads)
    mirrored = variant.startswith("tf-mirrored2")
    if mirrored:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        scope = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope()
    else:
        scope = contextlib.nullcontext()
    if variant in ("tf-bf16", "tf-bf16-xla"):
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    patch_encoder_layers(variant)
    keras.utils.set_random_seed(0)
    with scope:
        encoder = sct.encoders.resnet18((28, 28, 1), width=args.width)
        head = sct.heads.ProjectionHead(128, batch_norm=False)
        cls = sct.models.SupConModel
        if variant.endswith("nometrics"):
            class NoAccuracy(sct.models.SupConModel):
                def update_metrics(self, y, out):
                    pass
            cls = NoAccuracy
        model = cls(encoder, head=head)
        model.compile(optimizer=keras.optimizers.AdamW(2e-3, weight_decay=1e-4),
                      loss=sct.losses.SupConLoss(temperature=TEMPERATURE),
                      jit_compile=variant.endswith("xla"))
    views, labels = data(args.batch, args.steps)
    ds = tf.data.Dataset.from_tensor_slices(
        (views.reshape((-1,) + views.shape[2:]), labels.reshape(-1))).batch(
        args.batch, drop_remainder=True).cache().repeat()
    model.fit(ds, steps_per_epoch=args.warmup, epochs=1, verbose=0)
    rates = []
    for _ in range(args.repeats):
        timer = _EpochTimer()
        model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0, callbacks=[timer])
        rates.append(args.batch * args.steps / timer.seconds)
    return rates


# -- PyTorch -----------------------------------------------------------------------


def torch_model(width):
    import torch
    from torch import nn
    import torch.nn.functional as F

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                              nn.BatchNorm2d(cout))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class SupConResNet(nn.Module):
        def __init__(self):
            super().__init__()
            base = max(1, int(round(64 * width)))
            self.conv1 = nn.Conv2d(1, base, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(base)
            layers, cin = [], base
            for stage in range(4):
                cout = base * 2 ** stage
                for index in range(2):
                    layers.append(BasicBlock(cin, cout, 2 if stage and not index else 1))
                    cin = cout
            self.layers = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.Linear(cin, cin), nn.ReLU(inplace=True),
                                      nn.Linear(cin, 128))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x):
            x = x / 255.0
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layers(out)
            feat = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
            return F.normalize(self.head(feat).float(), dim=1)

    return SupConResNet()


def reference_supcon_loss():
    """SupCon's loss as HobbitLong/SupContrast's losses.py computes it
    (contrast_mode "all", labels given), transcribed."""
    import torch

    def loss_fn(features, labels, temperature=TEMPERATURE, base_temperature=TEMPERATURE):
        batch_size, contrast_count = features.shape[0], features.shape[1]
        labels = labels.contiguous().view(-1, 1)
        mask = torch.eq(labels, labels.T).float()
        contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
        anchor_feature, anchor_count = contrast_feature, contrast_count
        anchor_dot_contrast = torch.div(anchor_feature @ contrast_feature.T, temperature)
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
        logits = anchor_dot_contrast - logits_max.detach()
        mask = mask.repeat(anchor_count, contrast_count)
        logits_mask = torch.scatter(torch.ones_like(mask), 1,
                                    torch.arange(batch_size * anchor_count).view(-1, 1), 0)
        mask = mask * logits_mask
        exp_logits = torch.exp(logits) * logits_mask
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
        pairs = mask.sum(1)
        pairs = torch.where(pairs < 1e-6, torch.ones_like(pairs), pairs)
        mean_log_prob_pos = (mask * log_prob).sum(1) / pairs
        loss = -(temperature / base_temperature) * mean_log_prob_pos
        return loss.view(anchor_count, batch_size).mean()

    return loss_fn


def load_reference_losses(path):
    """`SupConLoss` from a file of the reference repository, as a function."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("supcontrast_losses", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    criterion = module.SupConLoss(temperature=TEMPERATURE, base_temperature=TEMPERATURE)
    return lambda features, labels: criterion(features, labels)


def run_torch(args, variant):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    channels_last = variant != "torch"
    bf16 = variant == "torch-cl-bf16"
    model = torch_model(args.width)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = (load_reference_losses(args.reference_losses) if args.reference_losses
               else reference_supcon_loss())
    if variant == "torch-compile":
        model = torch.compile(model)
        loss_fn = torch.compile(loss_fn)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    views, labels = data(args.batch, args.steps)
    batches = []
    for v, y in zip(views, labels):
        pair = [torch.from_numpy(v[:, i]).permute(0, 3, 1, 2).contiguous() for i in (0, 1)]
        if channels_last:
            pair = [p.contiguous(memory_format=torch.channels_last) for p in pair]
        batches.append((pair, torch.from_numpy(y)))
    model.train()

    def step(pair, y):
        images = torch.cat([pair[0], pair[1]], dim=0)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            features = model(images)
        f1, f2 = torch.split(features.float(), [len(y), len(y)], dim=0)
        loss = loss_fn(torch.cat([f1.unsqueeze(1), f2.unsqueeze(1)], dim=1), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    for i in range(args.warmup):
        step(*batches[i % len(batches)])
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for pair, y in batches:
            loss = step(pair, y)
        loss.item()
        rates.append(args.batch * args.steps / (time.perf_counter() - start))
    return rates


# -- what limits the step: the convolutions alone ---------------------------------

# (batch, height, in channels, out channels, stride) of ResNet-18 w0.125's 3x3
# convolutions on 2 x 128 images of 28 x 28.
CONV_SHAPES = ((256, 28, 8, 8, 1), (256, 28, 8, 16, 2), (256, 14, 16, 16, 1),
               (256, 14, 16, 32, 2), (256, 7, 32, 32, 1), (256, 7, 32, 64, 2),
               (256, 4, 64, 64, 1))


def _ms(fn, repeats):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats


def convs_tf(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    rng, out = np.random.default_rng(0), []
    for n, h, cin, cout, stride in CONV_SHAPES:
        x = tf.constant(rng.normal(size=(n, h, h, cin)), tf.float32)
        w = tf.Variable(rng.normal(size=(3, 3, cin, cout)).astype("float32"))
        fwd = tf.function(lambda: tf.nn.conv2d(x, w, stride, "SAME"))

        @tf.function
        def both():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.nn.conv2d(x, w, stride, "SAME")
            return tape.gradient(y, [x, w])

        out.append((_ms(fwd, args.repeats * 5), _ms(both, args.repeats * 5)))
    return out


def convs_torch(args):
    import torch
    torch.set_num_threads(args.threads)
    out = []
    for n, h, cin, cout, stride in CONV_SHAPES:
        x = torch.randn(n, cin, h, h).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        w = torch.randn(cout, cin, 3, 3, requires_grad=True)

        def fwd():
            with torch.no_grad():
                return torch.nn.functional.conv2d(x, w, stride=stride, padding=1)

        def both():
            y = torch.nn.functional.conv2d(x, w, stride=stride, padding=1)
            y.backward(torch.ones_like(y))

        out.append((_ms(fwd, args.repeats * 5), _ms(both, args.repeats * 5)))
    return out


def conv_table(args):
    tf_ms, torch_ms = spawn(args, "convs-tf"), spawn(args, "convs-torch")
    print(f"3x3 convolutions of ResNet-18 w{args.width} (batch, size, in, out, stride), "
          f"ms per call, {args.threads} threads; PyTorch channels_last")
    print("| shape | TF forward | TF forward + both gradients | PyTorch forward | "
          "PyTorch forward + both gradients | TF / PyTorch (with gradients) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shape, (tf_f, tf_b), (t_f, t_b) in zip(CONV_SHAPES, tf_ms, torch_ms):
        print(f"| {shape} | {tf_f:.1f} | {tf_b:.1f} | {t_f:.1f} | {t_b:.1f} | {tf_b / t_b:.2f} |")


# -- driver ------------------------------------------------------------------------


def worker(args):
    if args.worker.startswith("convs-"):
        rates = (convs_tf if args.worker == "convs-tf" else convs_torch)(args)
    else:
        rates = (run_tf if args.worker.startswith("tf") else run_torch)(args, args.worker)
    print("RESULT " + json.dumps({"variant": args.worker, "rates": rates}), flush=True)


def spawn(args, variant):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    if variant == "tf-nodnn":
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant,
           "--batch", str(args.batch), "--width", str(args.width),
           "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--repeats", str(args.repeats), "--threads", str(args.threads)]
    if args.reference_losses:
        cmd += ["--reference_losses", args.reference_losses]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])["rates"]
    raise RuntimeError(f"variant {variant} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed repeats inside each process (the best is kept)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="processes per variant, interleaved (median of their best)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--reference_losses", default=None,
                        help="path of HobbitLong/SupContrast's losses.py, to time its "
                             "own SupConLoss instead of the transcription")
    parser.add_argument("--convs", action="store_true",
                        help="time the encoder's convolutions alone in both frameworks")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("batch", "steps", "warmup", "repeats", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1. Received: {getattr(args, name)}")
    if args.worker:
        return worker(args)
    if args.convs:
        return conv_table(args)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"--variants takes a comma-separated subset of {', '.join(VARIANTS)}. "
                     f"Received: {args.variants!r}")
    if args.reference_losses and not os.path.isfile(args.reference_losses):
        parser.error(f"--reference_losses must be a file. Received: {args.reference_losses!r}")
    best = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            rates = spawn(args, v)
            best[v].append(max(rates))
            print(f"round {r + 1}: {v}: {max(rates):.1f} samples/s", file=sys.stderr, flush=True)
    rate = {v: statistics.median(best[v]) for v in variants}

    def fastest_torch(bf16):
        names = [v for v in variants if v.startswith("torch") and (("bf16" in v) == bf16)]
        return max(names, key=rate.get) if names else None

    print(f"batch {args.batch} x 2 views, ResNet-18 w{args.width}, {args.threads} threads, "
          f"median of {args.rounds} processes (best of {args.repeats} x {args.steps} steps each)")
    print("| variant | samples/s | encoder images/s | ratio to the fastest PyTorch variant |")
    print("| --- | --- | --- | --- |")
    for v in variants:
        ref = fastest_torch("bf16" in v)
        ratio = f"{rate[v] / rate[ref]:.2f} (vs {ref})" if ref and v.startswith("tf") else ""
        print(f"| {v} | {rate[v]:.1f} | {2 * rate[v]:.1f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
