"""The example scripts run as a user runs them: as subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--train_size", "512", "--batch_size", "128", "--width", "0.0625", "--verbose", "2"]


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
LONG_TAIL = ["--long_tailed_ratio", "10", "--positives_cap", "2"]


def test_pretrain_resumes_after_being_killed_then_linear_eval(tmp_path):
    model_dir = str(tmp_path / "supcon")
    cmd = [sys.executable, os.path.join(ROOT, "examples", "pretrain.py"), *TINY, *LONG_TAIL,
           "--batch_size", "32", "--epochs", "3", "--model_dir", model_dir]
    first = _kill_after_first_epoch(cmd)
    assert "Epoch 1/3" in first
    assert os.path.isdir(os.path.join(model_dir, "backup"))
    from supcon_tf.callbacks import latest_state
    assert sorted(latest_state(os.path.join(model_dir, "backup"))["epochs"]) == ["1"]
    assert not os.path.exists(os.path.join(model_dir, "encoder.keras"))

    second = _run("pretrain.py", *TINY, *LONG_TAIL, "--batch_size", "32", "--epochs", "3",
                  "--model_dir", model_dir)
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
    again = _run("pretrain.py", *TINY, *LONG_TAIL, "--batch_size", "32", "--epochs", "3",
                 "--model_dir", model_dir, check=False)
    assert "holds a finished run" in again and "--overwrite" in again
    assert os.path.getmtime(os.path.join(model_dir, "encoder.keras")) == encoder_time
    # Only this script's flags are recorded (not absl's own).
    assert "logtostderr" not in record["flags"] and "model_dir" in record["flags"]

    out = _run("linear_eval.py", "--encoder_path", os.path.join(model_dir, "encoder.keras"),
               "--train_size", "512", "--long_tailed_ratio", "10", "--batch_size", "64",
               "--epochs", "2", "--verbose", "2", "--class_balanced")
    assert "linear eval: test top-1" in out
    assert "many/medium/few-shot" in out and "per-class top-1" in out
    with open(os.path.join(model_dir, "linear", "linear_eval.json")) as f:
        result = json.load(f)
    assert len(result["accuracy"]["per_class"]) == 10
    assert result["accuracy"]["overall"] == pytest.approx(result["test_top1"], abs=1e-6)
    assert record["flags"]["positives_cap"] == 2 and record["flags"]["long_tailed_ratio"] == 10
    # 12 steps of pretraining: only that the evaluation ran and was recorded
    # (tests/test_learning.py checks that the recipe learns).
    assert 0.0 <= result["test_top1"] <= 1.0 and result["flags"]["epochs"] == 2
    assert result["flags"]["class_balanced"] and "Epoch 2/2" in out


@pytest.mark.parametrize("script,extra", [
    ("train_ce.py", ["--long_tailed_ratio", "10", "--batch_size", "64"]),
    ("pretrain.py", ["--mixed_precision", "mixed_bfloat16", "--jit_compile", "true",
                     "--crop_min_scale", "0.5", "--loss", "hcl", "--beta", "1", "--tau_plus", "0.05"]),
    ("pretrain.py", ["--method", "moco", "--queue_size", "256", "--temperature", "0.2"]),
    ("pretrain.py", ["--method", "supcon", "--queue_size", "256", "--symmetric", "--mochi",
                     "--mochi_n", "64", "--mochi_s", "32", "--mochi_s_prime", "8"]),
])
def test_other_entry_points_run(tmp_path, script, extra):
    out = _run(script, *TINY, "--epochs", "1", "--model_dir", str(tmp_path), *extra)
    assert os.path.exists(os.path.join(tmp_path, "encoder.keras")), out[-2000:]
    if script == "train_ce.py":
        assert "cross-entropy: test top-1" in out and "many/medium/few-shot" in out
    if "--queue_size" in extra:
        import keras
        import supcon_tf
        model = keras.models.load_model(os.path.join(tmp_path, "model.keras"))
        assert isinstance(model, supcon_tf.models.MoCoModel)
        assert model.queue.size == 256 and int(model.queue.count) == 256
        if "--mochi" in extra:
            assert (model.mochi_n, model.mochi_s, model.mochi_s_prime) == (64, 32, 8)
    if "--loss" in extra:
        record = json.loads(open(os.path.join(tmp_path, "pretrain.json")).read())
        assert record["flags"]["loss"] == "hcl" and record["flags"]["tau_plus"] == 0.05
        assert record["flags"]["jit_compile"] == "true"
        import keras
        model = keras.models.load_model(os.path.join(tmp_path, "model.keras"))
        assert model.jit_compile is True                     # XLA on the whole step


def test_pretrain_moco_under_a_one_device_strategy(tmp_path):
    """`--distribute mirrored` on a machine with one device: a strategy of one
    replica. MoCo's queue (a distributed variable there, written in place by
    scatter) and its loss of two views (built by Keras from the views) work."""
    out = _run("pretrain.py", *TINY, "--epochs", "1", "--method", "moco", "--queue_size", "256",
               "--distribute", "mirrored", "--model_dir", str(tmp_path))
    assert "on 1 replica(s)" in out
    import keras
    import supcon_tf  # noqa: F401  (registers the model classes)
    model = keras.models.load_model(str(tmp_path / "model.keras"))
    assert int(model.queue.count) == 256 and int(model.queue.pointer) == 0   # 4 x 128 keys


@pytest.mark.parametrize("method,extra,cls", [
    ("byol", ["--projection_hidden_dims", "32", "--predictor_hidden_dim", "24",
              "--imix", "cutmix", "--imix_alpha", "0.5"], "BYOLModel"),
    ("simsiam", ["--projection_hidden_dims", "32,32", "--adversarial_eps", "0.01",
                 "--adversarial_weight", "0.5", "--predictor_lr", "0.002"], "SimSiamModel"),
    ("barlow", ["--projection_hidden_dims", "32,32", "--barlow_lambda", "0.01"],
     "BarlowTwinsModel"),
    ("vicreg", ["--projection_hidden_dims", "32,32", "--vicreg_cov", "2"], "VICRegModel"),
    ("npid", ["--npid_negatives", "64", "--temperature", "0.07"], "NPIDModel"),
    ("pcl", ["--num_clusters", "4,8", "--pcl_warmup_epochs", "0", "--queue_size", "64"],
     "PCLModel"),
    ("swav", ["--num_prototypes", "20", "--small_views", "2", "--small_crop_size", "12",
              "--queue_size", "128", "--freeze_prototypes_steps", "1"], "SwAVModel"),
])
def test_pretrain_methods_without_negatives(tmp_path, method, extra, cls):
    out = _run("pretrain.py", "--train_size", "256", "--batch_size", "128", "--width", "0.0625",
               "--verbose", "2", "--epochs", "1", "--projection_dim", "16",
               "--model_dir", str(tmp_path), "--method", method, *extra)
    import keras
    import supcon_tf
    model = keras.models.load_model(str(tmp_path / "model.keras"))
    assert type(model) is getattr(supcon_tf.models, cls)
    if method == "pcl":                     # MoCo's inputs: no labels, no probe
        assert model.num_clusters == (4, 8) and float(model.clustered.numpy()) == 1.0
        assert "proto_loss" in out
        # The E-step's time, per epoch, in the run's record.
        record = json.loads(open(os.path.join(tmp_path, "pretrain.json")).read())
        assert record["history"]["clustering_seconds"][0] > 0
        return
    assert "probe_accuracy" in out and "output_std" in out      # labels feed the probe
    if method == "npid":
        assert model.bank_size == 256 and model.num_negatives == 64 and model.head.kind == "linear"
        assert int(model.steps_seen) == 2
        return
    if method == "swav":                    # multi-crop: an encoder for any image size
        assert model.small_views == 2 and model.num_prototypes == 20 and "code_entropy" in out
        assert int(model.queues[1].count) == 128 and model.encoder.input_shape[1:3] == (None, None)
        assert model.small_augmenter.layers[0].get_config()["height"] == 12
        # Its SavedModel serves the dataset's image size.
        _run("export.py", "--run_dir", str(tmp_path), "--savedmodel_only", str(tmp_path / "sm"))
        import tensorflow as tf
        serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
        assert serve.structured_input_signature[1]["images"].shape.as_list() == [None, 28, 28, 1]
        return
    assert not model.head.get_config()["normalize"] and model.head.output_dim == 16
    if method == "byol":
        assert model.momentum_schedule == "cosine" and int(model.planned_steps) == 2
        assert model.predictor.hidden_dims == (24,) and model.predictor.output_dim == 16
        assert (model.imix, model.imix_alpha) == ("cutmix", 0.5)
    if method == "simsiam":
        assert model.head.output_batch_norm and model.predictor.hidden_dims == (4,)
        assert (model.adversarial_eps, model.adversarial_weight) == (0.01, 0.5)
        assert model.predictor_learning_rate == 0.002
        assert int(model.predictor_optimizer.iterations) == 2         # trained, state saved
    if method == "barlow":
        assert model.lambda_ == 0.01 and isinstance(model.loss, supcon_tf.losses.BarlowTwinsLoss)
    if method == "vicreg":
        assert model.cov_coeff == 2.0 and not model.head.output_bias


def test_pretrain_simclr_with_head_and_colour_flags(tmp_path):
    _run("pretrain.py", *TINY, "--epochs", "1", "--model_dir", str(tmp_path),
         "--method", "simclr", "--optimizer", "lars", "--augment", "simclr", "--views", "3",
         "--color_strength", "1.25", "--projection_hidden_dims", "32,48")
    import keras
    import supcon_tf  # noqa: F401  (registers the classes for loading)
    model = keras.models.load_model(str(tmp_path / "model.keras"))
    assert model.views == 3 and model.head.hidden_dims == (32, 48)
    colour = model.augmenter.layers[2].layer     # RandomApply(brightness, contrast)
    brightness, contrast = (layer.get_config()["factor"] for layer in colour.layers)
    assert list(brightness) == [-1.0, 1.0] and contrast[1] == 1.0  # 0.8 * 1.25 (default 0.8)
    # The run record (what export.py copies onto a model card) holds the parsed sizes.
    record = json.loads((tmp_path / "pretrain.json").read_text())
    assert record["flags"]["projection_hidden_dims"] == [32, 48]
    assert record["flags"]["color_strength"] == 1.25


@pytest.mark.parametrize("extra,message", [
    (["--projection_hidden_dims", "64,0"], "--projection_hidden_dims must be positive"),
    (["--projection_hidden_dims", "wide"], "Received: wide"),
    (["--color_strength", "1.0"], "--color_strength needs --augment simclr"),
    (["--augment", "simclr", "--color_strength", "2"], "strength=2.0"),
    (["--method", "byol", "--queue_size", "64"], "byol has no queue"),
    (["--method", "simclr", "--positives_cap", "2"], "--positives_cap is for --method supcon"),
    (["--long_tailed_ratio", "0.5"], "imbalance_ratio"),
    (["--small_views", "2"], "--small_views (multi-crop) is for --method swav"),
    (["--method", "moco", "--predictor_lr", "0.01"], "--predictor_lr is for --method byol"),
    (["--method", "pcl"], "would train MoCo alone"),
])
def test_pretrain_rejects_bad_flags_before_training(tmp_path, extra, message):
    proc = subprocess.run([sys.executable, "examples/pretrain.py", *TINY, "--epochs", "1",
                           "--model_dir", str(tmp_path / "run"), *extra],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run" / "encoder.keras").exists()


def test_export_script_makes_a_zoo_entry(tmp_path):
    run_dir = str(tmp_path / "run")
    _run("pretrain.py", *TINY, "--epochs", "1", "--model_dir", run_dir, "--loss", "hcl",
         "--beta", "0.5", "--tau_plus", "0.05")
    zoo_dir, registry = tmp_path / "zoo", tmp_path / "registry.json"
    out = _run("export.py", "--run_dir", run_dir, "--name", "fashion_mnist_resnet18_supcon",
               "--zoo_dir", str(zoo_dir), "--registry", str(registry),
               "--command", "python examples/pretrain.py --epochs 1",
               "--eval_train_size", "2000", "--eval_test_size", "500")
    assert "fashion_mnist_resnet18_supcon: linear top-1" in out
    entry = json.loads(registry.read_text())["fashion_mnist_resnet18_supcon"]
    folder = zoo_dir / "fashion_mnist_resnet18_supcon"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "embeddings.png", "fashion_mnist_resnet18_supcon.tar.gz"]
    import supcon_tf as sct
    assert sct.zoo.sha256(folder / entry["archive"]) == entry["sha256"]
    assert entry["has_projection"] and entry["epochs"] == 1 and entry["method"] == "supcon"
    # The card names the loss option, and the registry records its flags.
    assert entry["method_long"] == ("Supervised contrastive (SupCon) with hard negatives "
                                    "(HCL, beta 0.5, tau+ 0.05)")
    assert {k: entry["training_flags"][k] for k in ("loss", "beta", "tau_plus")} == {
        "loss": "hcl", "beta": 0.5, "tau_plus": 0.05}
    assert 0.1 < entry["linear_top1"] <= 1 and 0.1 < entry["knn_top1"] <= 1
    assert ("[fashion_mnist_resnet18_supcon](fashion_mnist_resnet18_supcon/README.md) | "
            "supcon + HCL |") in (zoo_dir / "README.md").read_text()
    card = (folder / "README.md").read_text()
    assert f"{100 * entry['linear_top1']:.2f}%" in card and entry["sha256"] in card
    assert entry["eval_sizes"] == [2000, 500] and "first 2,000 training images" in card
    # Refuses to replace the entry without --overwrite.
    proc = subprocess.run([sys.executable, "examples/export.py", "--run_dir", run_dir,
                           "--name", "fashion_mnist_resnet18_supcon", "--zoo_dir",
                           str(zoo_dir), "--registry", str(registry)],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    assert proc.returncode != 0 and "--overwrite" in proc.stdout + proc.stderr
    # An archive over --max_archive_mb is refused before anything is written;
    # --noprojection serves the encoder alone.
    zoo2, registry2 = tmp_path / "zoo2", tmp_path / "registry2.json"
    small = ["export.py", "--run_dir", run_dir, "--name", "fashion_mnist_resnet18_supcon",
             "--zoo_dir", str(zoo2), "--registry", str(registry2),
             "--eval_train_size", "2000", "--eval_test_size", "500"]
    proc = subprocess.run([sys.executable, "examples/" + small[0], *small[1:],
                           "--max_archive_mb", "0.01"],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "more than --max_archive_mb=0.01" in proc.stderr and "--noprojection" in proc.stderr
    assert not zoo2.exists() and not registry2.exists()
    proc = subprocess.run([sys.executable, "examples/" + small[0], *small[1:],
                           "--max_archive_mb", "0"],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    assert proc.returncode != 0 and "--max_archive_mb must be a positive" in proc.stderr
    _run(*small, "--noprojection")
    entry2 = json.loads(registry2.read_text())["fashion_mnist_resnet18_supcon"]
    assert not entry2["has_projection"] and entry2["archive_bytes"] < entry["archive_bytes"]
    import tarfile
    import tensorflow as tf
    with tarfile.open(zoo2 / "fashion_mnist_resnet18_supcon" / entry2["archive"]) as tar:
        tar.extractall(tmp_path / "x2", filter="data")
    served = tf.saved_model.load(str(tmp_path / "x2" / "savedmodel"))
    assert sorted(served.signatures["serving_default"].structured_outputs) == ["embedding"]
    # Or just a SavedModel.
    _run("export.py", "--run_dir", run_dir, "--savedmodel_only", str(tmp_path / "sm"))
    assert (tmp_path / "sm" / "saved_model.pb").is_file()


def test_quickstart_runs_both_stages_and_exports(tmp_path):
    out = _run("quickstart.py", "--train_size", "512", "--epochs", "1", "--linear_epochs", "1",
               "--width", "0.0625", "--output_dir", str(tmp_path))
    assert "Linear-eval test top-1" in out
    assert (tmp_path / "encoder_savedmodel" / "saved_model.pb").is_file()
    gap = float(out.split("max difference after reload: ")[1].split(")")[0])
    assert gap < 1e-5


def test_semi_supervised_example_runs_every_row(tmp_path):
    run_dir = str(tmp_path / "pre")
    _run("pretrain.py", *TINY, "--method", "simclr", "--projection_hidden_dims", "16,16",
         "--epochs", "1", "--model_dir", run_dir)
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
