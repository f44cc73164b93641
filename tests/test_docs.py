"""The docs' code runs as written."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks(path):
    text = open(os.path.join(ROOT, path)).read()
    blocks = []
    while "```python" in text:
        text = text[text.index("```python") + len("```python"):]
        blocks.append(text[:text.index("```")])
        text = text[text.index("```") + 3:]
    return blocks


def test_methods_worked_example_runs(tmp_path, capsys):
    (block,) = _python_blocks("docs/methods.md")
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
