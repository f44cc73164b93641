"""supcon_tf: supervised contrastive learning for Keras 3 / TensorFlow."""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# Our own command line (`python -m supcon_tf.zoo`) imports this package, and so
# TensorFlow, before its module runs: keep TensorFlow's C++ start-up lines
# quiet there, unless the user set the level. Library imports change nothing.
_argv = getattr(_sys, "orig_argv", [])
if (any(a == "-m" and b.startswith("supcon_tf.") for a, b in zip(_argv, _argv[1:]))
        and "TF_CPP_MIN_LOG_LEVEL" not in _os.environ):
    _os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
# Quiet where the level asks for it (our command line, our example scripts, a
# user who set it) and TensorFlow is not imported yet.
_QUIET = ("tensorflow" not in _sys.modules
          and _os.environ.get("TF_CPP_MIN_LOG_LEVEL", "") in ("2", "3"))

# TF_CPP_MIN_LOG_LEVEL does not reach the lines TensorFlow 2.21 logs before
# absl::InitializeLog: where oneDNN is on by default (AVX-512 Xeons) it prints
# its oneDNN notice at import (twice) whatever the level. With the level at 2
# or more, importing this package first drops exactly these lines and passes
# every other one through.
_START_UP_LINES = ("All log messages before absl::InitializeLog() is called",
                   "oneDNN custom operations are on")


def _import_quietly(module):
    import tempfile
    _sys.stderr.flush()
    saved = _os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:
            _os.dup2(captured.fileno(), 2)
            try:
                __import__(module)
            finally:
                _os.dup2(saved, 2)
                captured.seek(0)
                lines = captured.read().decode(errors="replace").splitlines(keepends=True)
                _sys.stderr.write("".join(line for line in lines
                                          if not any(s in line for s in _START_UP_LINES)))
                _sys.stderr.flush()
    finally:
        _os.close(saved)


try:
    if _QUIET:
        _import_quietly("tensorflow")
    import tensorflow as _tf  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "supcon_tf needs TensorFlow >= 2.16, which is installed through an extra "
        "so that you choose the wheel. In the source folder (README, Install): "
        "pip install -e '.[cpu]' (CPU only, small wheel), '.[gpu]' (CUDA) or "
        "'.[tf]' (the default tensorflow wheel); or install tensorflow-cpu or "
        f"tensorflow yourself. Original error: {err}") from err

# Before anything is compiled with XLA: see supcon_tf/_xla_flags.py.
from supcon_tf import _xla_flags  # noqa: E402

_xla_flags.apply(_tf.__version__)

from supcon_tf import (augment, callbacks, clustering, data, dense, distribute,  # noqa: E402
                       encoders, evaluation, export, graphs, heads, layers, losses, memory, methods, metrics,
                       mixing, models, momentum, optimizers, self_paced, zoo)

__all__ = ["augment", "callbacks", "clustering", "data", "dense", "distribute", "encoders", "evaluation", "export",
           "graphs", "heads", "layers", "losses", "memory", "methods", "metrics", "mixing", "models", "momentum",
           "optimizers", "self_paced", "zoo", "__version__"]
