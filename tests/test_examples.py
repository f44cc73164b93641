"""The example scripts run as a user runs them: as subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _config(name, train_size=512, batch_size=128):
    """pretrain.py's flags for configs/fashion_mnist/<name>.py on a small
    subset, a small encoder and one epoch (later flags override these)."""
    return ["--config", f"configs/fashion_mnist/{name}.py",
            f"--config.data.train_size={train_size}", f"--config.batch_size={batch_size}",
            "--config.encoder.width=0.0625", "--config.epochs=1", "--verbose", "2"]


TINY = _config("supcon")


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run(script, *args, timeout=600, check=True):
    """The script's output; check=False expects the run to fail (exit code not 0)."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args],
                          capture_output=True, text=True, env=_env(), timeout=timeout,
                          cwd=ROOT)
    if not check:
        assert proc.returncode != 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not check or proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _kill_after_first_epoch(cmd, timeout=600):
    """Starts `cmd`, kills it (SIGKILL, no clean-up) once epoch 2 has begun."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env(), cwd=ROOT)
    deadline = time.time() + timeout
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Epoch 2/"):
            proc.send_signal(signal.SIGKILL)
            break
        assert time.time() < deadline, "".join(lines[-50:])
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(lines[-50:])
    return "".join(lines)


# The resumed run is also the long-tail study's (KCL on a long-tailed subset).
LONG_TAIL = ["--config.data.long_tailed_ratio=10", "--config.loss.positives_cap=2",
             "--config.batch_size=32", "--config.epochs=3"]


def test_pretrain_resumes_after_being_killed_then_linear_eval(tmp_path):
    model_dir = str(tmp_path / "supcon")
    cmd = [sys.executable, os.path.join(ROOT, "examples", "pretrain.py"), *TINY, *LONG_TAIL,
           "--model_dir", model_dir]
    first = _kill_after_first_epoch(cmd)
    assert "Epoch 1/3" in first
    assert os.path.isdir(os.path.join(model_dir, "backup"))
    from supcon_tf.callbacks import latest_state
    assert sorted(latest_state(os.path.join(model_dir, "backup"))["epochs"]) == ["1"]
    assert not os.path.exists(os.path.join(model_dir, "encoder.keras"))

    second = _run("pretrain.py", *TINY, *LONG_TAIL, "--model_dir", model_dir)
    assert "Epoch 1/3" not in second, second[-2000:]       # continued, not restarted
    assert "Epoch 2/3" in second and "Epoch 3/3" in second
    assert os.path.exists(os.path.join(model_dir, "encoder.keras"))
    assert os.listdir(os.path.join(model_dir, "logs"))       # TensorBoard
    assert not os.path.exists(os.path.join(model_dir, "backup"))  # removed when done
    # The record describes the whole run, both processes' epochs and time.
    record = json.loads(open(os.path.join(model_dir, "pretrain.json")).read())
    assert record["processes"] == 2 and len(record["history"]["loss"]) == 3
    assert record["wall_seconds"] > 0
    assert not [f for f in os.listdir(model_dir) if f.startswith(".")]   # no temp files
    # The same command again does not train over the finished run.
    encoder_time = os.path.getmtime(os.path.join(model_dir, "encoder.keras"))
    again = _run("pretrain.py", *TINY, *LONG_TAIL, "--model_dir", model_dir, check=False)
    assert "holds a finished run" in again and "--overwrite" in again
    assert os.path.getmtime(os.path.join(model_dir, "encoder.keras")) == encoder_time
    # The record holds the recipe with its overrides, and the config file.
    assert record["config_file"] == "configs/fashion_mnist/supcon.py"
    assert record["config"]["loss"]["positives_cap"] == 2
    assert record["config"]["data"]["long_tailed_ratio"] == 10

    out = _run("linear_eval.py", "--encoder_path", os.path.join(model_dir, "encoder.keras"),
               "--train_size", "512", "--long_tailed_ratio", "10", "--batch_size", "64",
               "--epochs", "2", "--verbose", "2", "--class_balanced")
    assert "linear eval: test top-1" in out
    assert "many/medium/few-shot" in out and "per-class top-1" in out
    with open(os.path.join(model_dir, "linear", "linear_eval.json")) as f:
        result = json.load(f)
    assert len(result["accuracy"]["per_class"]) == 10
    assert result["accuracy"]["overall"] == pytest.approx(result["test_top1"], abs=1e-6)
    # 12 steps of pretraining: only that the evaluation ran and was recorded
    # (tests/test_learning.py checks that the recipe learns).
    assert 0.0 <= result["test_top1"] <= 1.0 and result["flags"]["epochs"] == 2
    assert result["flags"]["class_balanced"] and "Epoch 2/2" in out


@pytest.mark.parametrize("script,extra", [
    ("train_ce.py", [*_config("ce", batch_size=64), "--config.data.long_tailed_ratio=10"]),
    ("pretrain.py", [*_config("moco"), "--config.model.queue_size=256",
                     "--config.distribute=mirrored",
                     "--config.method=supcon_queue", "--config.model.symmetric=true",
                     "--config.model.mochi_n=64", "--config.model.mochi_s=32",
                     "--config.model.mochi_s_prime=8"]),
])
def test_other_entry_points_run(tmp_path, script, extra):
    out = _run(script, *extra, "--model_dir", str(tmp_path))
    assert os.path.exists(os.path.join(tmp_path, "encoder.keras")), out[-2000:]
    if script == "train_ce.py":
        assert "cross-entropy: test top-1" in out and "many/medium/few-shot" in out
        record = json.loads(open(os.path.join(tmp_path, "train_ce.json")).read())
        assert record["config"]["data"]["long_tailed_ratio"] == 10
        assert record["config_file"] == "configs/fashion_mnist/ce.py"
        return
    import keras
    import supcon_tf
    model = keras.models.load_model(os.path.join(tmp_path, "model.keras"))
    # Labels reach the queue. `distribute="mirrored"` on a machine with one
    # device: a strategy of one replica, where the queue is a distributed
    # variable written in place by scatter.
    assert "on 1 replica(s)" in out
    assert type(model) is supcon_tf.models.SupConQueueModel
    assert model.queue.size == 256 and int(model.queue.count) == 256
    assert int(model.queue.labels.numpy().min()) >= 0
    assert (model.mochi_n, model.mochi_s, model.mochi_s_prime) == (64, 32, 8)


@pytest.mark.parametrize("method,extra", [
    ("pcl", ["--config.model.num_clusters=(4, 8)", "--config.model.warmup_epochs=0",
             "--config.model.queue_size=64"]),
    ("swav", ["--config.model.num_prototypes=20", "--config.model.small_views=2",
              "--config.model.small_crop_size=12", "--config.model.queue_size=128",
              "--config.model.freeze_prototypes_steps=1"]),
])
def test_pretrain_feeds_each_method_what_its_class_declares(tmp_path, method, extra):
    """Indices and the per-epoch clustering callback (PCL), labels for the
    probe and multi-crop's second augmentation (SwAV), as the script feeds
    them (tests/test_configs.py builds and steps every config in-process)."""
    out = _run("pretrain.py", *_config(method, train_size=256), "--config.head.dim=16",
               "--model_dir", str(tmp_path), *extra)
    import keras
    import supcon_tf
    model = keras.models.load_model(str(tmp_path / "model.keras"))
    assert type(model) is supcon_tf.methods.get(method)
    if method == "pcl":                     # MoCo's inputs: no labels, no probe
        assert model.num_clusters == (4, 8) and float(model.clustered.numpy()) == 1.0
        assert "proto_loss" in out and "probe_accuracy" not in out
        # The E-step's time, per epoch, in the run's record.
        record = json.loads(open(os.path.join(tmp_path, "pretrain.json")).read())
        assert record["history"]["clustering_seconds"][0] > 0
        return
    assert "probe_accuracy" in out and "output_std" in out      # labels feed the probe
    if method == "npid":
        assert model.bank_size == 256 and model.num_negatives == 64 and model.head.kind == "linear"
        assert int(model.steps_seen) == 2
    if method == "swav":                    # multi-crop: an encoder for any image size
        assert model.small_views == 2 and model.num_prototypes == 20 and "code_entropy" in out
        assert int(model.queues[1].count) == 128 and model.encoder.input_shape[1:3] == (None, None)
        assert model.small_augmenter.layers[0].get_config()["height"] == 12
        # Its SavedModel serves the dataset's image size.
        _run("export.py", "--run_dir", str(tmp_path), "--savedmodel_only", str(tmp_path / "sm"))
        import tensorflow as tf
        serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
        assert serve.structured_input_signature[1]["images"].shape.as_list() == [None, 28, 28, 1]
    if method == "byol":
        assert not model.head.get_config()["normalize"] and model.head.output_dim == 16
        assert model.momentum_schedule == "cosine" and int(model.planned_steps) == 2
        assert model.predictor.hidden_dims == (24,) and model.predictor.output_dim == 16
        assert (model.imix, model.imix_alpha) == ("cutmix", 0.5)


def test_pretrain_rejects_bad_configs_before_training(tmp_path):
    """A recipe the library refuses stops the script with the library's
    message (here a constructor's; the checks themselves, `methods.resolve`'s
    included, are tested in-process beside their functions)."""
    extra, message = ["--config.head.hidden_dims=(64, 0)"], "`hidden_dims` must be positive integers"
    proc = subprocess.run([sys.executable, "examples/pretrain.py", *TINY,
                           "--model_dir", str(tmp_path / "run"), *extra],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run" / "encoder.keras").exists()


def test_a_method_registered_in_a_config_file_runs_from_pretrain(tmp_path):
    """docs/methods.md: a user's own method, registered by the config file
    that names it, trains with the same script."""
    config = tmp_path / "my_method.py"
    config.write_text(_block_after(os.path.join(ROOT, "docs", "methods.md"),
                                   "<!-- own method config -->"))
    out = _run("pretrain.py", "--config", str(config), "--config.data.train_size=256",
               "--config.encoder.width=0.0625", "--config.epochs=1",
               "--model_dir", str(tmp_path / "run"))
    assert "pretrained my_simclr for 1 epochs" in out
    record = json.loads((tmp_path / "run" / "pretrain.json").read_text())
    assert record["config"]["method"] == "my_simclr" and len(record["history"]["loss"]) == 1


def _block_after(path, marker):
    """The fenced code block that follows `marker` in a markdown file."""
    text = open(path).read().split(marker, 1)[1]
    return text.split("```python\n", 1)[1].split("```", 1)[0]


# One short pretraining run serves the tests that read a finished run (export,
# SimCLR v2's rows); `--dist loadgroup` (Makefile) keeps them on one worker.
SHARED_RUN = pytest.mark.xdist_group("pretrained_run")


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("pretrained") / "run")
    _run("pretrain.py", *_config("hcl"), "--model_dir", run_dir, "--config.method=supcon",
         "--config.loss.beta=0.5", "--config.loss.tau_plus=0.05",
         "--config.head.hidden_dims=(16, 16)", "--config.augment.color_strength=1.25",
         "--config.optimizer.name=lars")
    return run_dir


@SHARED_RUN
def test_pretrain_builds_and_trains_what_the_config_says(pretrained_run):
    """The shared run's recipe: HCL's loss on SupCon, LARS, two hidden layers,
    a stronger colour jitter (tests/test_mixed_precision.py trains bfloat16
    under XLA, the recipe's `mixed_precision` and `jit_compile`)."""
    import keras
    import supcon_tf
    model = keras.models.load_model(os.path.join(pretrained_run, "model.keras"))
    record = json.loads(open(os.path.join(pretrained_run, "pretrain.json")).read())
    assert type(model) is supcon_tf.models.SupConModel
    assert record["config"]["loss"] == {"name": "HardNegativeLoss", "temperature": 0.2,
                                        "tau_plus": 0.05, "beta": 0.5}
    assert isinstance(model.optimizer, supcon_tf.optimizers.LARS)
    assert model.head.hidden_dims == (16, 16)
    colour = model.augmenter.layers[2].layer     # RandomApply(brightness, contrast)
    brightness, contrast = (layer.get_config()["factor"] for layer in colour.layers)
    assert list(brightness) == [-1.0, 1.0] and contrast[1] == 1.0  # 0.8 * 1.25 (default 0.8)


@SHARED_RUN
def test_export_script_makes_a_zoo_entry(tmp_path, pretrained_run):
    run_dir = pretrained_run
    zoo_dir, registry = tmp_path / "zoo", tmp_path / "registry.json"
    out = _run("export.py", "--run_dir", run_dir, "--name", "fashion_mnist_resnet18_supcon",
               "--zoo_dir", str(zoo_dir), "--registry", str(registry),
               "--eval_train_size", "1000", "--eval_test_size", "300", "--feature_map")
    assert "fashion_mnist_resnet18_supcon: linear top-1" in out
    entry = json.loads(registry.read_text())["fashion_mnist_resnet18_supcon"]
    folder = zoo_dir / "fashion_mnist_resnet18_supcon"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "embeddings.png", "fashion_mnist_resnet18_supcon.tar.gz"]
    import supcon_tf as sct
    assert sct.zoo.sha256(folder / entry["archive"]) == entry["sha256"]
    assert entry["has_projection"] and entry["epochs"] == 1 and entry["method"] == "supcon"
    assert entry["has_feature_map"]
    # The card names the loss option, and the registry records its flags.
    assert entry["method_long"] == ("Supervised contrastive (SupCon) with hard negatives "
                                    "(HCL, beta 0.5, tau+ 0.05)")
    assert entry["recipe"]["loss"] == {"name": "HardNegativeLoss", "temperature": 0.2,
                                       "tau_plus": 0.05, "beta": 0.5}
    # The command: the config file and every value the run changed.
    assert entry["config"] == "configs/fashion_mnist/hcl.py"
    assert entry["command"] == (
        "python examples/pretrain.py --config configs/fashion_mnist/hcl.py "
        "--config.augment.color_strength=1.25 "
        "--config.data.train_size=512 --config.encoder.width=0.0625 "
        "--config.epochs=1 --config.head.hidden_dims='(16, 16)' "
        "--config.loss.beta=0.5 --config.loss.tau_plus=0.05 "
        f"--config.method=supcon --config.optimizer.name=lars --model_dir {run_dir}")
    assert 0.1 < entry["linear_top1"] <= 1 and 0.1 < entry["knn_top1"] <= 1
    assert ("[fashion_mnist_resnet18_supcon](fashion_mnist_resnet18_supcon/README.md) | "
            "supcon + HCL |") in (zoo_dir / "README.md").read_text()
    card = (folder / "README.md").read_text()
    assert f"{100 * entry['linear_top1']:.2f}%" in card and entry["sha256"] in card
    # Width 0.0625: the last stage's 512 * 0.0625 channels on a 4 x 4 map.
    assert entry["feature_map_shape"] == [4, 4, 32]
    assert "the feature map its global pooling reads (`feature_map`, 4 x 4 x 32)" in card
    assert entry["eval_sizes"] == [1000, 300] and "first 1,000 training images" in card
    # Refuses to replace the entry without --overwrite.
    proc = subprocess.run([sys.executable, "examples/export.py", "--run_dir", run_dir,
                           "--name", "fashion_mnist_resnet18_supcon", "--zoo_dir",
                           str(zoo_dir), "--registry", str(registry)],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    assert proc.returncode != 0 and "--overwrite" in proc.stdout + proc.stderr
    # An archive over --max_archive_mb is refused before anything is written.
    zoo2, registry2 = tmp_path / "zoo2", tmp_path / "registry2.json"
    small = ["export.py", "--run_dir", run_dir, "--name", "fashion_mnist_resnet18_supcon",
             "--zoo_dir", str(zoo2), "--registry", str(registry2),
             "--eval_train_size", "1000", "--eval_test_size", "300"]
    proc = subprocess.run([sys.executable, "examples/" + small[0], *small[1:],
                           "--max_archive_mb", "0.01"],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "more than --max_archive_mb=0.01" in proc.stderr and "--noprojection" in proc.stderr
    assert not zoo2.exists() and not registry2.exists()
    # The archive's SavedModel serves the projection as well; --noprojection
    # serves the encoder alone (a smaller SavedModel), and with
    # --savedmodel_only that is all that is written.
    import tarfile

    import tensorflow as tf
    with tarfile.open(folder / entry["archive"]) as tar:
        tar.extractall(tmp_path / "archive", filter="data")
    _run("export.py", "--run_dir", run_dir, "--savedmodel_only", str(tmp_path / "sm_encoder"),
         "--noprojection")
    assert sorted(p.name for p in (tmp_path / "sm_encoder").iterdir() if p.is_file()) == [
        "fingerprint.pb", "saved_model.pb"]
    sizes = {}
    for saved, outputs in ((tmp_path / "archive" / "savedmodel",
                            ["embedding", "feature_map", "projection"]),
                           (tmp_path / "sm_encoder", ["embedding"])):
        served = tf.saved_model.load(str(saved))
        sizes[saved.name] = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
        assert sorted(served.signatures["serving_default"].structured_outputs) == outputs
    assert sizes["sm_encoder"] < sizes["savedmodel"]


def test_quickstart_runs_both_stages_and_exports(tmp_path):
    out = _run("quickstart.py", "--train_size", "512", "--epochs", "1", "--linear_epochs", "1",
               "--width", "0.0625", "--output_dir", str(tmp_path))
    assert "Linear-eval test top-1" in out
    assert (tmp_path / "encoder_savedmodel" / "saved_model.pb").is_file()
    gap = float(out.split("max difference after reload: ")[1].split(")")[0])
    assert gap < 1e-5


@SHARED_RUN
def test_semi_supervised_example_runs_every_row(tmp_path, pretrained_run):
    run_dir = pretrained_run
    out = _run("semi_supervised.py", "--pretrained", os.path.join(run_dir, "model.keras"),
               "--train_size", "512", "--test_size", "256", "--per_class", "5",
               "--subset_epochs", "1",
               "--distill_epochs", "1", "--batch_size", "64", "--model_dir",
               str(tmp_path / "semi"))
    record = json.loads((tmp_path / "semi" / "semi_supervised.json").read_text())
    assert record["labelled"] == 50
    assert set(record["results"]) == {"ce", "linear", "finetune", "distill"}
    assert all(0 <= r["test_top1"] <= 1 for r in record["results"].values())
    assert "| distill |" in out


def test_semi_supervised_linear_row_on_a_zoo_encoder(tmp_path):
    # The "SimCLR pretraining (the zoo encoder) + linear eval on the subset".
    out = _run("semi_supervised.py", "--pretrained", "zoo:fashion_mnist_resnet18_simclr",
               "--rows", "linear", "--train_size", "1000", "--test_size", "500",
               "--per_class", "10", "--subset_epochs", "40", "--model_dir", str(tmp_path))
    record = json.loads((tmp_path / "semi_supervised.json").read_text())
    assert record["labelled"] == 100 and set(record["results"]) == {"linear"}
    # 10 labels per class on the zoo's SimCLR features: far above chance (10%).
    assert record["results"]["linear"]["test_top1"] > 0.5, out[-2000:]
    bad = _run("semi_supervised.py", "--pretrained", "zoo:fashion_mnist_resnet18_simclr",
               "--fraction", "0.01", check=False)
    assert "runs the linear row only" in bad and "Received: --rows ce,linear" in bad


def test_linear_eval_of_a_zoo_entry_and_exactly_one_encoder(tmp_path):
    out = _run("linear_eval.py", "--zoo", "fashion_mnist_resnet18_simclr", "--task", "rotation",
               "--train_size", "512", "--epochs", "2", "--batch_size", "128",
               "--model_dir", str(tmp_path))
    record = json.loads((tmp_path / "linear_eval.json").read_text())
    assert record["flags"]["zoo"] == "fashion_mnist_resnet18_simclr"
    # Four quarter turns: chance is 25%.
    assert 0.25 < record["test_top1"] <= 1.0, out[-2000:]
    bad = _run("linear_eval.py", "--zoo", "fashion_mnist_resnet18_simclr", "--encoder_path",
               "x.keras", check=False)
    assert "exactly one of --encoder_path and --zoo" in bad


def test_contragan_trains_scores_and_draws_both_discriminators(tmp_path):
    """The 2C run end to end (a few steps); the projection discriminator's
    step in this process (its run differs only in the discriminator)."""
    out = _run("contragan.py", "--discriminator", "contra", "--train_size", "128",
               "--batch_size", "32", "--epochs", "1", "--eval_images", "100",
               "--out_dir", str(tmp_path))
    record = json.loads(open(os.path.join(tmp_path, "contragan.json")).read())
    assert record["discriminator"] == "contra" and record["eval_images"] == 100, out[-2000:]
    assert record["frechet_distance"] > record["frechet_distance_train_vs_test"] > 0
    assert 0.0 <= record["class_consistency_knn"] <= 1.0
    assert record["last_epoch"]["d_cond"] > 0 and record["last_epoch"]["g_cond"] > 0
    import matplotlib.image
    grid = matplotlib.image.imread(os.path.join(tmp_path, "samples.png"))
    assert grid.shape[:2] == (280, 280)

    import importlib.util

    import numpy as np
    spec = importlib.util.spec_from_file_location("contragan", os.path.join(ROOT, "examples",
                                                                            "contragan.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    disc = example.discriminator("projection", 16)
    assert len(disc.outputs) == 1
    gan = example.ConditionalGAN(example.generator(8), disc, 8)
    gan.compile(1e-3)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(32, 28, 28, 1)).astype("float32")
    logs = gan.fit(images, rng.integers(0, 10, 32).astype("int32"), batch_size=16, epochs=1,
                   verbose=0).history
    assert np.isfinite(logs["d_loss"][0]) and logs["d_cond"][0] == 0.0


def test_crossmodal_trains_both_towers_and_scores_zero_shot(tmp_path):
    out = _run("crossmodal.py", "--train_size", "128", "--batch_size", "32", "--epochs", "1",
               "--width", "0.0625", "--held_out_classes", "5,9", "--out_dir", str(tmp_path))
    record = json.loads(open(os.path.join(tmp_path, "crossmodal.json")).read())
    assert record["held_out_classes"] == [5, 9] and record["train_images"] == 128, out[-2000:]
    for key in ("zero_shot_top1_seen_classes", "zero_shot_top1_unseen_among_all",
                "zero_shot_top1_unseen_among_unseen"):
        assert 0.0 <= record[key] <= 1.0
    assert 0 < record["logit_scale"] <= 100 and record["final_loss"] == record["final_loss"]


def test_graphcl_trains_and_probes_three_encoders(tmp_path):
    out = _run("graphcl.py", "--train_size", "256", "--batch_size", "64", "--epochs", "1",
               "--out_dir", str(tmp_path))
    record = json.loads(open(os.path.join(tmp_path, "graphcl.json")).read())
    assert record["views"] == ["subgraph", "drop_nodes"] and record["train_graphs"] == 256, \
        out[-2000:]
    assert record["graphcl_final_loss"] > 0 and 10 < record["mean_nodes"] <= 49
    for name in ("graphcl", "random", "supervised"):
        assert 0.0 <= record[f"probe_top1_{name}"] <= 1.0


def test_spcl_adapts_and_scores_its_encoder(tmp_path):
    # (The other two runs, source_only and target_supcon, train plain
    # SpCLModel / SupConModel, which the contract test covers.)
    out = _run("spcl.py", "--source_size", "128", "--target_size", "128", "--test_size", "128",
               "--epochs", "1", "--batch_size", "64", "--k1", "10", "--runs", "spcl",
               "--out_dir", str(tmp_path))
    record = json.loads(open(os.path.join(tmp_path, "spcl.json")).read())
    assert record["flags"]["shift"] == "invert", out[-2000:]
    assert "source_only" not in record and "target_supcon" not in record
    spcl = record["spcl"]
    for probe in ("source", "target"):
        assert 0.0 <= spcl[f"target_top1_{probe}_probe"] <= 1.0
    assert spcl["clusters"] + spcl["outliers"] >= 1 and spcl["final_loss"] > 0
    assert -1.0 <= spcl["pseudo_label_ari"] <= 1.0 and 0.0 <= spcl["pseudo_label_nmi"] <= 1.0


def test_dense_eval_of_a_zoo_entry(tmp_path):
    out = _run("dense_eval.py", "--zoo", "fashion_mnist_resnet18_simclr", "--train_size", "512",
               "--test_size", "256", "--epochs", "10", "--batch_size", "64",
               "--model_dir", str(tmp_path))
    record = json.loads((tmp_path / "dense_eval.json").read_text())
    assert record["feature_shape"] == [4, 4, 64] and len(record["iou"]) == 11
    # Background alone (about half the pixels) gives a mean IoU below 0.1 (one
    # class of 11): the probe reads classes and extent from the map.
    assert 0.25 < record["miou"] <= 1.0 and record["pixel_accuracy"] > 0.6, out[-2000:]
