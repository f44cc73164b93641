"""The docs' code runs as written."""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks(path):
    text = open(os.path.join(ROOT, path)).read()
    blocks = []
    while "```python" in text:
        text = text[text.index("```python") + len("```python"):]
        blocks.append(text[:text.index("```")])
        text = text[text.index("```") + 3:]
    return blocks


def _block(path, marker):
    (block,) = [b for b in _python_blocks(path) if marker in b]
    return block


def test_methods_without_negatives_snippet_runs():
    import numpy as np
    scope = {}
    exec(_block("docs/methods.md", "BYOLModel"), scope)   # noqa: S102
    x = np.random.default_rng(0).uniform(0, 255, (16, 28, 28, 1)).astype("float32")
    for name, cls in (("byol", "BYOLModel"), ("simsiam", "SimSiamModel"),
                      ("barlow", "BarlowTwinsLoss"), ("vicreg", "VICRegLoss")):
        model = scope[name]
        assert cls in (type(model).__name__, type(model.loss).__name__)
        history = model.fit(x, batch_size=8, epochs=1, verbose=0).history
        assert np.isfinite(history["loss"][0]) and history["output_std"][0] > 0


def test_methods_worked_example_runs(tmp_path, capsys):
    block = _block("docs/methods.md", "QueuedSimCLR")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope = {}
        exec(block, scope)   # noqa: S102
    finally:
        os.chdir(cwd)
    model = scope["model"]
    assert int(model.queue.count) == 64 and os.path.isfile(tmp_path / "queued_simclr.keras")
    import keras
    loaded = keras.models.load_model(str(tmp_path / "queued_simclr.keras"))
    assert int(loaded.queue.count) == 64
    assert type(loaded).__name__ == "QueuedSimCLR"


README_BLOCKS = _python_blocks("README.md")


def test_the_readme_has_a_snippet_per_capability():
    text = "\n".join(README_BLOCKS)
    for capability in ("SupConLoss", "LinearClassifier", "export_encoder", "MoCoModel",
                       "BYOLModel", "NPIDModel", "PCLClustering", "few_labels",
                       "DistillationModel", "zoo.load"):
        assert capability in text, capability


@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_every_readme_snippet_runs_as_written(index, tmp_path, monkeypatch):
    # Each block on its own, in a fresh namespace and an empty folder, as a
    # user pastes it.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPCON_TF_CACHE", str(tmp_path / "cache"))
    exec(compile(README_BLOCKS[index], f"README.md block {index}", "exec"), {})  # noqa: S102
