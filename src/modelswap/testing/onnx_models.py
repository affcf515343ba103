"""Real ONNX models for tests and benchmarks, built with the onnx package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from modelswap import volume


def scale_model(path: Path, factor: float, width: int = 4, input_name: str = "input") -> Path:
    """output = input @ (factor * I): every output element is `factor` for an input of ones.
    `width` sets the weight size: 1600 is about 10 MB, 5000 about 100 MB."""
    weight = numpy_helper.from_array((np.eye(width) * factor).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", [input_name, "W"], ["output"])],
        "scale",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])],
        [weight],
    )
    _save(graph, path)
    return path


def mlp_model(path: Path, factor: float, width: int, layers: int) -> Path:
    """`layers` MatMuls of width x width random float32 weights (seeded; the first layer scaled
    by `factor`, so versions differ), as a real MLP stores them: many tensors, not one.
    onnxruntime's heap behaves differently for many mid-sized tensors (glibc keeps them in its
    arenas) than for one big one (mmapped, returned at once), and weights of mostly zeros (an
    identity) are not all resident, so memory measurements need this shape."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(
            (
                rng.standard_normal((width, width)) * (factor if i == 0 else 1.0) / np.sqrt(width)
            ).astype(np.float32),
            f"W{i}",
        )
        for i in range(layers)
    ]
    nodes = [
        helper.make_node("MatMul", ["input" if i == 0 else f"h{i - 1}", f"W{i}"], [f"h{i}"])
        for i in range(layers)
    ]
    nodes.append(helper.make_node("Identity", [f"h{layers - 1}"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])],
        weights,
    )
    _save(graph, path)
    return path


def failing_model(path: Path, width: int = 4) -> Path:
    """Same signature as scale_model, but every inference fails (reshape to a wrong size)."""
    shape = numpy_helper.from_array(np.array([3, 5], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["output"])],
        "failing",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])],
        [shape],
    )
    _save(graph, path)
    return path


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))


def version_dir(root: Path, version: str, model: Path | None = None, **meta: object) -> Path:
    """A folder laid out like the agent's versions/<v>/ with its metadata.json."""
    folder = root / volume.VERSIONS_DIR / version
    folder.mkdir(parents=True, exist_ok=True)
    if model is not None and model.parent != folder:
        (folder / "model.onnx").write_bytes(model.read_bytes())
    (folder / volume.METADATA_FILE).write_text(json.dumps({"version": version, **meta}))
    return folder


def swap_link(root: Path, version: str) -> None:
    """What the agent does: a temporary relative link renamed over `current`."""
    volume.swap_link(root, version)
