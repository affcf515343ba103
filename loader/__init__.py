"""The in-app loader: hot-swaps ONNX Runtime sessions behind the local link (PRODUCT.md s4).

loader = ModelLoader("/models/classifier/current", health_port=9102).start()
outputs = loader.run(None, {"input": x})
"""

from .core import Loaded, ModelLoader, ModelNotLoaded
from .onnx_model import ModelLoadError

__all__ = ["Loaded", "ModelLoadError", "ModelLoader", "ModelNotLoaded"]
