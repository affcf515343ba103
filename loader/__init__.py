"""The in-app loader: hot-swaps ONNX Runtime sessions behind the local link (PRODUCT.md s4)."""
