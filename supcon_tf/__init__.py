"""supcon_tf: supervised contrastive learning for Keras 3 / TensorFlow."""

__version__ = "0.1.0"

try:
    import tensorflow as _tf  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "supcon_tf needs TensorFlow >= 2.16, which is installed through an extra "
        "so that you choose the wheel: pip install 'supcon_tf[cpu]' (CPU only, "
        "small wheel), 'supcon_tf[gpu]' (CUDA) or 'supcon_tf[tf]' (the default "
        f"tensorflow wheel). Original error: {err}") from err

from supcon_tf import (augment, data, distribute, encoders, evaluation,  # noqa: E402
                       export, layers, losses, memory, metrics, models, momentum,
                       optimizers, zoo)

__all__ = ["augment", "data", "distribute", "encoders", "evaluation", "export",
           "layers", "losses", "memory", "metrics", "models", "momentum", "optimizers",
           "zoo", "__version__"]
