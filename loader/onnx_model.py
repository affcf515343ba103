"""ONNX Runtime specifics: build a session, read its signature, synthesise a warm-up input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelswap.errors import ModelswapError

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


class ModelLoadError(ModelswapError):
    default_hint = "the previous version keeps serving; fix the version and move the pointer"


@dataclass(frozen=True)
class Port:
    name: str
    type: str
    shape: tuple[int | str | None, ...]


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]

    def incompatibility(self, new: Signature) -> str | None:
        """Why `new` cannot replace self for callers written against self, or None."""
        for old_ports, new_ports, kind in (
            (self.inputs, new.inputs, "input"),
            (self.outputs, new.outputs, "output"),
        ):
            olds = {p.name: p for p in old_ports}
            news = {p.name: p for p in new_ports}
            if set(olds) != set(news):
                return f"{kind} names changed from {sorted(olds)} to {sorted(news)}"
            for name, o in olds.items():
                n = news[name]
                if o.type != n.type:
                    return f"{kind} {name!r} changed type from {o.type} to {n.type}"
                if len(o.shape) != len(n.shape):
                    return f"{kind} {name!r} changed rank from {len(o.shape)} to {len(n.shape)}"
                for a, b in zip(o.shape, n.shape, strict=True):
                    if isinstance(a, int) and isinstance(b, int) and a != b:
                        return f"{kind} {name!r} changed shape from {o.shape} to {n.shape}"
        return None


def find_model_file(folder: Path, model_file: str | None) -> Path:
    if model_file is not None:
        path = folder / model_file
        if not path.is_file():
            raise ModelLoadError(f"{path} does not exist in the version")
        return path
    found = sorted(folder.glob("*.onnx"))
    if len(found) != 1:
        raise ModelLoadError(
            f"{folder} holds {len(found)} .onnx files; expected exactly one",
            hint="pass ModelLoader(..., model_file='name.onnx')",
        )
    return found[0]


def default_options() -> Any:
    """ONNX Runtime's defaults, except that idle intra-op threads sleep instead of spinning.
    A spinning pool keeps every core busy between requests, so the next version's build
    starves and requests during a swap wait behind it (measured at half load, 10 MB model:
    p99 during swaps 8x steady with spinning, 1.4-1.8x without; steady p50 unchanged)."""
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def create_session(path: Path, options: Any = None, providers: list[str] | None = None) -> Any:
    import onnxruntime as ort  # noqa: PLC0415 - only apps that load ONNX pay for the import

    if options is None:
        options = default_options()
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as e:
        raise ModelLoadError(f"onnxruntime cannot load {path.name}: {_first_line(e)}") from e


def signature(session: Any) -> Signature:
    def ports(items: Any) -> tuple[Port, ...]:
        return tuple(Port(p.name, p.type, tuple(p.shape)) for p in items)

    return Signature(ports(session.get_inputs()), ports(session.get_outputs()))


WARMUP_MAX_BYTES = 64 << 20


def warmup_feed(session: Any, max_bytes: int = WARMUP_MAX_BYTES) -> dict[str, Any]:
    """One small input per model input: symbolic dimensions become 1. The declared shapes
    come from the model file, so their size is checked before anything is allocated: a
    102-byte model can declare a [1, 1073741824] input (4 GiB of float32)."""
    import numpy as np  # noqa: PLC0415

    shapes = {}
    total = 0
    for p in session.get_inputs():
        dtype = _DTYPES.get(p.type)
        if dtype is None:
            raise ModelLoadError(
                f"cannot warm up input {p.name!r} of type {p.type}",
                hint="pass ModelLoader(..., warmup=callable) for this model",
            )
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in p.shape]
        size = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
        total += size
        if total > max_bytes:
            raise ModelLoadError(
                f"warm-up input {p.name!r} of declared shape {list(p.shape)} ({p.type}) needs "
                f"{_bytes(size)}, above warmup_max_bytes={max_bytes} ({_bytes(max_bytes)})"
                + (f" with the inputs before it ({_bytes(total)} in all)" if total > size else ""),
                hint="pass ModelLoader(..., warmup=callable) with a realistic input, raise "
                "warmup_max_bytes=, or warmup=False; the previous version keeps serving",
            )
        shapes[p.name] = (shape, dtype)
    return {name: np.zeros(shape, dtype=dtype) for name, (shape, dtype) in shapes.items()}


def warm_up(session: Any, max_bytes: int = WARMUP_MAX_BYTES) -> None:
    feed = warmup_feed(session, max_bytes)
    try:
        session.run(None, feed)
    except Exception as e:
        raise ModelLoadError(f"warm-up inference failed: {_first_line(e)}") from e


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
