"""Stage 1: contrastive pretraining of an encoder (SupCon, SimCLR, MoCo v2,
BYOL, SimSiam, Barlow Twins, VICReg, NPID, PCL, SwAV).

    python examples/pretrain.py --method supcon --epochs 10 --model_dir runs/supcon
    python examples/pretrain.py --method moco --temperature 0.2 --model_dir runs/moco
    python examples/pretrain.py --method supcon --queue_size 4096   # SupCon + MoCo queue
    python examples/pretrain.py --method supcon --long_tailed_ratio 100 --positives_cap 4  # KCL
    python examples/pretrain.py --method byol --projection_hidden_dims 512 --model_dir runs/byol
    python examples/pretrain.py --method npid --temperature 0.07 --model_dir runs/npid
    python examples/pretrain.py --method pcl --num_clusters 10,20,50 --model_dir runs/pcl
    python examples/pretrain.py --method swav --num_prototypes 100 --small_views 4 \
        --model_dir runs/swav                                 # with multi-crop
    python examples/pretrain.py --method barlow --projection_dim 1024 \
        --projection_hidden_dims 1024,1024 --model_dir runs/barlow

Writes to --model_dir: `encoder.keras` (the pretrained encoder, for
examples/linear_eval.py), `model.keras` (encoder + head), TensorBoard logs in
`logs/`, and a `backup/` that lets an interrupted run continue from its last
finished epoch when started again with the same command. The defaults are small
enough for a laptop CPU; the flags give the real recipe.
"""

import os

# Our entry points keep TensorFlow's C++ start-up lines quiet (set the
# variable yourself to see them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import shutil
import sys
import time

# First: it imports TensorFlow without the start-up lines the level above hides.
import supcon_tf as sct  # noqa: E402,I001
from absl import app, flags, logging
import keras
import tensorflow as tf


FLAGS = flags.FLAGS
METHODS = ["supcon", "simclr", "moco", "byol", "simsiam", "barlow", "vicreg", "npid", "pcl",
           "swav"]
NO_NEGATIVES = ("byol", "simsiam", "barlow", "vicreg")
flags.DEFINE_enum("method", "supcon", METHODS,
                  "supcon uses the labels; the others ignore them (except for the online "
                  "probe of the methods without negatives).")
flags.DEFINE_enum("npid_loss", "nce", ["nce", "softmax"], "NPID: NCE or the "
                  "non-parametric softmax.")
flags.DEFINE_integer("npid_negatives", 4096, "NPID: bank negatives per step (0: every slot, "
                     "--npid_loss softmax only).")
flags.DEFINE_list("num_clusters", ["10", "20", "50"], "PCL: k-means cluster counts.")
flags.DEFINE_bool("overwrite", False, "Train over a finished run in --model_dir (a run "
                  "that was interrupted resumes without it).")
flags.DEFINE_integer("pcl_warmup_epochs", 1, "PCL: epochs of InfoNCE alone first.")
flags.DEFINE_integer("pcl_negatives", 16000, "PCL: negative prototypes per clustering (r).")
flags.DEFINE_integer("queue_size", None,
                     "MoCo's queue of past keys (default 4096 for --method moco). With "
                     "--method supcon: SupCon with a momentum encoder and a labelled queue. "
                     "With --method swav: embeddings per coded view joining the Sinkhorn "
                     "step (default 0, none).")
flags.DEFINE_integer("num_prototypes", 100, "SwAV: prototypes (K).")
flags.DEFINE_float("sinkhorn_epsilon", 0.05, "SwAV: Sinkhorn's entropy regularisation.")
flags.DEFINE_integer("swav_queue_start_epoch", 0,
                     "SwAV: the epoch the queue joins from, counted from 0 as Keras does.")
flags.DEFINE_integer("freeze_prototypes_steps", 313, "SwAV: steps without prototype updates.")
flags.DEFINE_integer("small_views", 0, "SwAV: multi-crop's small crops per image.")
flags.DEFINE_integer("small_crop_size", 14, "SwAV: the small crops' side in pixels.")
flags.DEFINE_list("small_crop_scale", ["0.05", "0.3"], "SwAV: the small crops' area range.")
flags.DEFINE_float("momentum", 0.99, "Momentum of MoCo's key encoder or BYOL's target "
                   "(its start, with the cosine schedule).")
flags.DEFINE_enum("momentum_schedule", None, ["constant", "cosine"],
                  "Default: constant for moco, cosine for byol.")
flags.DEFINE_integer("predictor_hidden_dim", None,
                     "BYOL / SimSiam predictor's hidden layer (default: BYOL, the "
                     "projector's first hidden size; SimSiam, projection_dim / 4).")
flags.DEFINE_float("predictor_lr", None,
                   "BYOL / SimSiam: a constant learning rate for the predictor (SimSiam's "
                   "'lr with no decay', e.g. the --lr value); default: the schedule's.")
flags.DEFINE_float("barlow_lambda", 0.0051, "Barlow Twins' off-diagonal weight.")
flags.DEFINE_float("vicreg_sim", 25.0, "VICReg's invariance weight.")
flags.DEFINE_float("vicreg_std", 25.0, "VICReg's variance weight.")
flags.DEFINE_float("vicreg_cov", 1.0, "VICReg's covariance weight.")
flags.DEFINE_bool("symmetric", False, "MoCo: also the loss with the views swapped (v2+).")
flags.DEFINE_enum("loss", "supcon", ["supcon", "hcl"],
                  "simclr / supcon without a queue: supcon is SupConLoss (NT-Xent without "
                  "labels); hcl is HardNegativeLoss (HCL; with --beta 0 the debiased loss).")
flags.DEFINE_float("tau_plus", 0.1, "--loss hcl: the class prior tau+ in [0, 1).")
flags.DEFINE_float("beta", 1.0, "--loss hcl: concentration on hard negatives (0: debiased).")
flags.DEFINE_bool("mochi", False, "MoCo / SupCon with a queue: MoCHi's synthetic hard "
                  "negatives (--mochi_n, --mochi_s, --mochi_s_prime, --mochi_start_epoch).")
flags.DEFINE_integer("mochi_n", 1024, "MoCHi's N: the hardest queue negatives to mix.")
flags.DEFINE_integer("mochi_s", 1024, "MoCHi's s: mixes of two hard negatives per query.")
flags.DEFINE_integer("mochi_s_prime", 256, "MoCHi's s': mixes of the query with one.")
flags.DEFINE_integer("mochi_start_epoch", 0, "MoCHi: the epoch (0-based) mixing starts.")
flags.DEFINE_enum("imix", None, ["mixup", "cutmix"],
                  "i-Mix: mix view 0 within the batch, with virtual labels (supcon, simclr, "
                  "moco without --symmetric, byol, simsiam).")
flags.DEFINE_float("imix_alpha", 1.0, "i-Mix: Beta(alpha, alpha) of the mixing weight.")
flags.DEFINE_float("adversarial_eps", 0.0, "CLAE: FGSM step of the adversarial view of "
                   "view 0, as a fraction of the pixel range (0.03: 3% of 255); 0 is off.")
flags.DEFINE_float("adversarial_weight", 1.0, "CLAE: weight of the adversarial term.")
flags.DEFINE_integer("bn_groups", 2, "MoCo: BatchNorm groups per replica (shuffle-BN).")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset name (supcon_tf.data.load).")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_integer("train_size", None, "Use only the first N training images.")
flags.DEFINE_float("long_tailed_ratio", None, "Train on a long-tailed subset "
                   "(supcon_tf.data.long_tailed): largest over smallest class, e.g. 100.")
flags.DEFINE_enum("long_tailed_profile", "exponential", ["exponential", "step"],
                  "Profile of --long_tailed_ratio.")
flags.DEFINE_integer("positives_cap", None, "SupCon: at most k same-class positives per "
                     "anchor (k-positive contrastive learning, KCL); default all.")
flags.DEFINE_enum("encoder", "resnet18", ["resnet18", "resnet34", "resnet50"], "Backbone.")
flags.DEFINE_float("width", 0.25, "Channel width multiplier of the encoder.")
flags.DEFINE_integer("epochs", 2, "Training epochs.")
flags.DEFINE_integer("batch_size", 256, "Global batch size (images; each gives --views views).")
flags.DEFINE_integer("views", 2, "Augmented views per image.")
flags.DEFINE_float("temperature", 0.1, "Loss temperature.")
flags.DEFINE_enum("augment", "supcon", ["supcon", "simclr"], "Augmentation recipe.")
flags.DEFINE_float("crop_min_scale", None,
                   "Smallest area fraction of the resized crop (default: the recipe's, "
                   "0.2 for supcon, 0.08 for simclr).")
flags.DEFINE_float("color_strength", None,
                   "Colour distortion strength s of the simclr recipe (default 1.0; "
                   "only with --augment simclr).")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "lars", "adamw"], "Optimizer.")
flags.DEFINE_float("lr", 0.5, "Peak learning rate at --batch_size (not rescaled).")
flags.DEFINE_float("weight_decay", 1e-4, "Weight decay.")
flags.DEFINE_float("warmup_epochs", 1.0, "Linear warmup epochs before the cosine decay.")
flags.DEFINE_integer("projection_dim", 128, "Projection head output size.")
flags.DEFINE_list("projection_hidden_dims", None,
                  "Hidden layer sizes of the projection head, e.g. 512 or 256,256 "
                  "(default: one hidden layer as wide as the encoder's features).")
flags.DEFINE_string("model_dir", "runs/pretrain", "Output folder.")
flags.DEFINE_enum("distribute", "none", list(sct.distribute.STRATEGIES),
                  "none: one device; mirrored: all local devices; multi_worker: "
                  "MultiWorkerMirroredStrategy from TF_CONFIG (docs/SCALING.md).")
flags.DEFINE_bool("synchronized_bn", None,
                  "BatchNorm statistics over the global batch (default: on when "
                  "--distribute is not none).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "mixed_bfloat16", "mixed_float16"],
                  "Keras dtype policy; the loss is always computed in float32, and "
                  "mixed_float16 uses loss scaling.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA on the whole training step (Keras's compile(jit_compile=...); "
                  "auto = Keras's default, off on a CPU). On AVX2 CPUs without bfloat16 "
                  "arithmetic, true is faster, and mixed_bfloat16 needs it to be usable "
                  "(docs/BENCHMARKS.md).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("verbose", 1, "Keras verbosity: 1 progress bar, 2 one line per epoch.")


def make_optimizer(name, schedule, weight_decay):
    if name == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=weight_decay)
    if name == "lars":
        return sct.optimizers.LARS(schedule, momentum=0.9, weight_decay=weight_decay)
    return keras.optimizers.AdamW(schedule, weight_decay=weight_decay)


def parse_hidden_dims(values):
    """`--projection_hidden_dims` as a tuple of positive ints, or None."""
    if not values:
        return None
    try:
        dims = tuple(int(v) for v in values)
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise app.UsageError("--projection_hidden_dims must be positive integers separated "
                             f"by commas. Received: {','.join(values)}")
    return dims


def imix_options():
    """The model arguments of --imix and --adversarial_eps (none without them)."""
    options = {} if FLAGS.imix is None else {"imix": FLAGS.imix, "imix_alpha": FLAGS.imix_alpha}
    if FLAGS.adversarial_eps:
        options.update(adversarial_eps=FLAGS.adversarial_eps,
                       adversarial_weight=FLAGS.adversarial_weight)
    return options


def no_negatives_model(encoder, augmenter, hidden_dims, sync_bn, probe_classes):
    """BYOL, SimSiam, Barlow Twins or VICReg with the papers' head shapes at
    --projection_dim / --projection_hidden_dims (not L2-normalised)."""
    method, dim = FLAGS.method, FLAGS.projection_dim
    head_options = {"simsiam": {"output_batch_norm": True},
                    "barlow": {"output_bias": False},
                    "vicreg": {"output_bias": False}}.get(method, {})
    head = sct.layers.ProjectionHead(dim, hidden_dims=hidden_dims, normalize=False,
                                     synchronized_bn=sync_bn, name="projector",
                                     **head_options)
    common = {"head": head, "augmenter": augmenter, "views": FLAGS.views,
              "probe_classes": probe_classes, **imix_options()}
    if method == "byol":
        hidden = FLAGS.predictor_hidden_dim or (hidden_dims[0] if hidden_dims else 4096)
        return sct.models.BYOLModel(
            encoder, predictor=sct.layers.byol_predictor(dim, hidden, synchronized_bn=sync_bn),
            momentum=FLAGS.momentum, momentum_schedule=FLAGS.momentum_schedule or "cosine",
            predictor_learning_rate=FLAGS.predictor_lr, **common)
    if method == "simsiam":
        hidden = FLAGS.predictor_hidden_dim or max(1, dim // 4)
        return sct.models.SimSiamModel(
            encoder, predictor=sct.layers.simsiam_predictor(dim, hidden,
                                                            synchronized_bn=sync_bn),
            predictor_learning_rate=FLAGS.predictor_lr, **common)
    if method == "barlow":
        return sct.models.BarlowTwinsModel(encoder, lambda_=FLAGS.barlow_lambda, **common)
    return sct.models.VICRegModel(encoder, sim_coeff=FLAGS.vicreg_sim,
                                  std_coeff=FLAGS.vicreg_std, cov_coeff=FLAGS.vicreg_cov,
                                  **common)


def swav_model(encoder, recipe, recipe_args, image_shape, hidden_dims, sync_bn, queue_size,
               augmenter, probe_classes):
    small = None
    if FLAGS.small_views:
        try:
            scale = tuple(float(v) for v in FLAGS.small_crop_scale)
        except ValueError:
            raise app.UsageError("--small_crop_scale takes two numbers. Received: "
                                 f"{','.join(FLAGS.small_crop_scale)}") from None
        size = FLAGS.small_crop_size
        small = recipe((size, size, image_shape[-1]), seed=FLAGS.seed + 1,
                       **{**recipe_args, "crop_scale": scale})
    head = sct.layers.ProjectionHead(FLAGS.projection_dim, hidden_dims=hidden_dims,
                                     synchronized_bn=sync_bn)
    return sct.models.SwAVModel(
        encoder, head=head, augmenter=augmenter, num_prototypes=FLAGS.num_prototypes,
        temperature=FLAGS.temperature, epsilon=FLAGS.sinkhorn_epsilon, queue_size=queue_size,
        queue_start_epoch=FLAGS.swav_queue_start_epoch,
        freeze_prototypes_steps=FLAGS.freeze_prototypes_steps, small_augmenter=small,
        small_views=FLAGS.small_views, prototype_seed=FLAGS.seed, probe_classes=probe_classes)


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    # TensorFlow's INFO lines (through absl and its own logger; under multi-worker,
    # one per all-reduce) drown the progress.
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("WARNING")
    if FLAGS.mixed_precision != "none":
        keras.mixed_precision.set_dtype_policy(FLAGS.mixed_precision)
    hidden_dims = parse_hidden_dims(FLAGS.projection_hidden_dims)
    if FLAGS.color_strength is not None and FLAGS.augment != "simclr":
        raise app.UsageError(f"--color_strength needs --augment simclr. Received: "
                             f"--augment {FLAGS.augment}")
    queue_size = FLAGS.queue_size
    if FLAGS.method in ("moco", "pcl") and queue_size is None:
        queue_size = 4096
    if FLAGS.method == "npid" and (FLAGS.loss != "supcon" or FLAGS.views != 2 or FLAGS.imix
                                   or FLAGS.adversarial_eps):
        raise app.UsageError("--method npid takes one view per image and its own loss "
                             "(--npid_loss); not --loss, --views, --imix or --adversarial_eps.")
    if FLAGS.method not in ("moco", "supcon", "pcl", "swav") and queue_size is not None:
        raise app.UsageError(f"--queue_size is for --method moco, supcon or swav "
                             f"({FLAGS.method} has no queue).")
    if FLAGS.predictor_lr is not None and FLAGS.method not in ("byol", "simsiam"):
        raise app.UsageError("--predictor_lr is for --method byol or simsiam (the methods "
                             f"with a predictor). Received: --method {FLAGS.method}")
    if FLAGS.small_views and FLAGS.method != "swav":
        raise app.UsageError("--small_views (multi-crop) is for --method swav.")
    if FLAGS.method == "pcl" and FLAGS.epochs <= FLAGS.pcl_warmup_epochs:
        raise app.UsageError(
            f"--method pcl clusters from epoch --pcl_warmup_epochs={FLAGS.pcl_warmup_epochs} "
            f"on: --epochs={FLAGS.epochs} would train MoCo alone. Train for more epochs "
            "than the warm-up (or --pcl_warmup_epochs 0).")
    if FLAGS.mochi and (queue_size is None or FLAGS.method == "swav"):
        raise app.UsageError("--mochi mixes queue negatives: it needs --method moco, or "
                             "--method supcon with --queue_size.")
    if FLAGS.positives_cap is not None and (FLAGS.method != "supcon" or FLAGS.loss != "supcon"
                                            or queue_size is not None):
        raise app.UsageError("--positives_cap is for --method supcon with --loss supcon and "
                             "no queue.")
    if FLAGS.loss != "supcon" and (queue_size is not None
                                   or FLAGS.method in NO_NEGATIVES + ("swav",)):
        raise app.UsageError(f"--loss {FLAGS.loss} is for --method simclr or supcon without "
                             f"a queue. Received: --method {FLAGS.method}"
                             + (f" --queue_size {queue_size}" if queue_size else ""))
    backup_dir = os.path.join(FLAGS.model_dir, "backup")
    finished = os.path.isfile(os.path.join(FLAGS.model_dir, "pretrain.json"))
    if finished and not os.path.isdir(backup_dir):
        if not FLAGS.overwrite:
            raise app.UsageError(
                f"{FLAGS.model_dir} holds a finished run (pretrain.json, encoder.keras): "
                "pass --overwrite to train a new one over it, or choose another --model_dir.")
        print(f"--overwrite: training a new run over the finished one in {FLAGS.model_dir}")
    elif FLAGS.overwrite and os.path.isdir(backup_dir):
        shutil.rmtree(backup_dir)                    # start afresh, not from the backup
    strategy = sct.distribute.get_strategy(FLAGS.distribute)
    chief = sct.distribute.is_chief(strategy)
    # Only the chief writes into --model_dir; other workers write to a
    # temporary folder that is removed at the end.
    out_dir = sct.distribute.output_dir(FLAGS.model_dir, strategy)
    os.makedirs(out_dir, exist_ok=True)
    split = "train" if FLAGS.train_size is None else f"train[:{FLAGS.train_size}]"
    train = sct.data.load(FLAGS.dataset, split, data_dir=FLAGS.data_dir)
    if FLAGS.long_tailed_ratio is not None:
        train = sct.data.long_tailed(train, FLAGS.long_tailed_ratio,
                                     FLAGS.long_tailed_profile, seed=FLAGS.seed).cache()
    image_shape = tuple(train.element_spec[0].shape)
    bank_size = int(train.cardinality())
    in_order = train.map(lambda image, label: image)     # PCL clusters these, unshuffled
    if FLAGS.method in ("simclr", "moco", "pcl"):
        train = train.map(lambda image, label: image)
    if FLAGS.method in ("npid", "pcl"):
        # Each sample's index, before shuffling: its slot in the memory bank.
        train = sct.data.with_index(train)
    # The methods without negatives keep the labels for their online probe only.
    # --batch_size is the global batch; under a strategy each replica gets an
    # equal share of every batch (drop_remainder=True).
    train = sct.data.batches(train, FLAGS.batch_size, training=True, seed=FLAGS.seed)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train = train.with_options(options)
    steps_per_epoch = int(train.cardinality())
    if steps_per_epoch < 1:
        raise ValueError(f"--batch_size={FLAGS.batch_size} is larger than the training set.")
    sct.distribute.check_dataset(train, strategy)
    sync_bn = (FLAGS.distribute != "none" if FLAGS.synchronized_bn is None
               else FLAGS.synchronized_bn)

    with strategy.scope():
        # Multi-crop feeds images of two sizes: the encoder takes any size.
        encoder_shape = (image_shape if not FLAGS.small_views
                         else (None, None, image_shape[-1]))
        encoder = sct.encoders.get(FLAGS.encoder, encoder_shape, width=FLAGS.width,
                                   synchronized_bn=sync_bn)
        recipe = sct.augment.supcon if FLAGS.augment == "supcon" else sct.augment.simclr
        recipe_args = ({} if FLAGS.crop_min_scale is None
                else {"crop_scale": (FLAGS.crop_min_scale, 1.0)})
        if FLAGS.color_strength is not None:
            recipe_args["strength"] = FLAGS.color_strength
        augmenter = recipe(image_shape, seed=FLAGS.seed, **recipe_args)
        probe_classes = (sct.data.num_classes(FLAGS.dataset)
                         if FLAGS.method in ("supcon", "npid", "swav")
                         or FLAGS.method in NO_NEGATIVES
                         else None)
        if FLAGS.method == "npid":
            model = sct.models.NPIDModel(
                encoder, bank_size, head=sct.layers.ProjectionHead(FLAGS.projection_dim,
                                                                   kind="linear"),
                augmenter=augmenter, temperature=FLAGS.temperature, loss=FLAGS.npid_loss,
                num_negatives=FLAGS.npid_negatives or None, probe_classes=probe_classes)
            loss = None                      # its own
        elif FLAGS.method in NO_NEGATIVES:
            model = no_negatives_model(encoder, augmenter, hidden_dims, sync_bn, probe_classes)
            loss = None                      # the method's own
        elif FLAGS.method == "swav":
            model = swav_model(encoder, recipe, recipe_args, image_shape, hidden_dims, sync_bn,
                               queue_size or 0, augmenter, probe_classes)
            loss = None                      # its own
        elif FLAGS.method == "pcl":
            try:
                clusters = tuple(int(k) for k in FLAGS.num_clusters)
            except ValueError:
                raise app.UsageError("--num_clusters takes integers separated by commas. "
                                     f"Received: {','.join(FLAGS.num_clusters)}") from None
            head = sct.layers.ProjectionHead(FLAGS.projection_dim, hidden_dims=hidden_dims,
                                             synchronized_bn=sync_bn)
            model = sct.models.PCLModel(
                encoder, bank_size, num_clusters=clusters,
                warmup_epochs=FLAGS.pcl_warmup_epochs,
                num_prototype_negatives=FLAGS.pcl_negatives, head=head, augmenter=augmenter,
                queue_size=queue_size, momentum=FLAGS.momentum, temperature=FLAGS.temperature,
                bn_groups=FLAGS.bn_groups)
            loss = None                      # InfoNCE + ProtoNCE
        elif queue_size is None:
            head = sct.layers.ProjectionHead(FLAGS.projection_dim, hidden_dims=hidden_dims,
                                             synchronized_bn=sync_bn)
            model = sct.models.SupConModel(encoder, head=head, augmenter=augmenter,
                                           views=FLAGS.views, probe_classes=probe_classes,
                                           **imix_options())
            if FLAGS.loss == "hcl":
                loss = sct.losses.HardNegativeLoss(temperature=FLAGS.temperature,
                                                   tau_plus=FLAGS.tau_plus, beta=FLAGS.beta)
            else:
                loss = sct.losses.SupConLoss(temperature=FLAGS.temperature,
                                             positives_cap=FLAGS.positives_cap)
        else:
            head = sct.layers.ProjectionHead(FLAGS.projection_dim, hidden_dims=hidden_dims,
                                             synchronized_bn=sync_bn)
            model = sct.models.MoCoModel(
                encoder, head=head, augmenter=augmenter, views=FLAGS.views,
                queue_size=queue_size, momentum=FLAGS.momentum, temperature=FLAGS.temperature,
                symmetric=FLAGS.symmetric, bn_groups=FLAGS.bn_groups,
                momentum_schedule=FLAGS.momentum_schedule or "constant",
                probe_classes=probe_classes, **imix_options(),
                **(dict(mochi_n=FLAGS.mochi_n, mochi_s=FLAGS.mochi_s,
                        mochi_s_prime=FLAGS.mochi_s_prime,
                        mochi_start_epoch=FLAGS.mochi_start_epoch) if FLAGS.mochi else {}))
            loss = None                      # MoCoLoss(temperature)
        total_steps = FLAGS.epochs * steps_per_epoch
        schedule = sct.optimizers.warmup_cosine(
            FLAGS.lr, total_steps=total_steps,
            warmup_steps=min(int(FLAGS.warmup_epochs * steps_per_epoch), total_steps - 1))
        model.compile(optimizer=make_optimizer(FLAGS.optimizer, schedule, FLAGS.weight_decay),
                      loss=loss, jit_compile={"auto": "auto", "true": True,
                                              "false": False}[FLAGS.jit_compile])

    # Each epoch's backup (weights and the run's record) is written whole or
    # not at all; it is deleted only once every artifact is in place (below),
    # so a kill at any moment, even while the artifacts are written, resumes.
    backup = sct.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False,
                                            read_only=not chief)
    callbacks = [keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"))]
    if FLAGS.method == "pcl":
        callbacks.append(sct.models.PCLClustering(in_order))
    # The backup last: it records the logs as the callbacks before it left them.
    model.fit(train, epochs=FLAGS.epochs, verbose=FLAGS.verbose if chief else 0,
              callbacks=callbacks + [backup])
    run = backup.record
    if sorted(map(int, run["epochs"])) != list(range(1, FLAGS.epochs + 1)):
        # Never write an encoder over the run's artifacts that is not the
        # result of every epoch.
        raise RuntimeError(f"The run's record holds epochs {sorted(map(int, run['epochs']))}, "
                           f"not 1-{FLAGS.epochs}: nothing was saved. Rerun with --overwrite "
                           "to train from scratch.")
    # Each artifact is written to a temporary name and renamed into place.
    sct.export.save_model(encoder, os.path.join(out_dir, "encoder.keras"))
    sct.export.save_model(model, os.path.join(out_dir, "model.keras"))
    if chief:
        recorded = {f.name: f.value for f in FLAGS.get_flags_for_module(sys.argv[0])}
        recorded["projection_hidden_dims"] = list(hidden_dims) if hidden_dims else None
        epochs = sorted(run["epochs"], key=int)
        # (A key the first epochs lack, e.g. of a run resumed by a newer
        # version, reads None there.)
        history = {k: [run["epochs"][e].get(k) for e in epochs]
                   for k in run["epochs"][epochs[-1]]}
        # The whole run, over every process that worked on it (resumes included).
        sct.export.write_json({"flags": recorded, "wall_seconds": run["seconds"],
                               "processes": run["processes"],
                               "replicas": strategy.num_replicas_in_sync,
                               "history": history},
                              os.path.join(out_dir, "pretrain.json"), indent=1, default=str)
        shutil.rmtree(backup_dir, ignore_errors=True)
        print(f"pretrained {FLAGS.method} for {FLAGS.epochs} epochs in {run['seconds']:.0f} s "
              f"({run['processes']} process(es)) on {strategy.num_replicas_in_sync} replica(s); "
              f"final loss {history['loss'][-1]:.6f}; encoder saved to "
              f"{os.path.join(FLAGS.model_dir, 'encoder.keras')}")
    sct.distribute.cleanup_output_dir(out_dir, FLAGS.model_dir)


if __name__ == "__main__":
    app.run(main)
