"""The in-app loader: hot-swaps ONNX Runtime sessions behind the local link (PRODUCT.md s4).

loader = ModelLoader("/models/classifier/current", health_port=9102).start()
outputs = loader.run(None, {"input": x})
"""

from .build import Loaded
from .core import ModelLoader, ModelNotLoaded
from .health import HealthPortUnavailable
from .onnx_model import ModelLoadError
from .shared import SharedUnavailable

__all__ = [
    "HealthPortUnavailable",
    "Loaded",
    "ModelLoadError",
    "ModelLoader",
    "ModelNotLoaded",
    "SharedUnavailable",
]
