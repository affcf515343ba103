"""The built-in evaluator: an ONNX model in a version folder against an .npz eval set (X, y).

Rows are streamed out of the .npz in batches (the zip member is read incrementally), and
metrics are accumulated as sums, so memory stays flat however many rows the set has.
Integer labels mean classification (accuracy, plus log loss when the model outputs
probabilities); float targets mean regression (rmse, mae).
"""

from __future__ import annotations

import importlib
import math
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from modelswap.errors import ModelswapError, UsageError

BATCH_ROWS = 4096
Evaluator = Callable[[Path, Path], dict[str, float]]


class EvaluationError(ModelswapError):
    default_hint = "a gate that cannot evaluate refuses; fix the eval set or the evaluator"


def load_evaluator(spec: str | Evaluator | None) -> Evaluator:
    """The built-in evaluator, a callable given by the API, or a user's `module:function`
    (the working folder is importable)."""
    if spec is None:
        return builtin
    if callable(spec):
        return spec
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(
            f"--evaluator {spec!r} is not module:function", hint="e.g. --evaluator my_eval:evaluate"
        )
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UsageError(
            f"cannot load evaluator {spec!r}: {e}",
            hint="the module must be importable from the working folder",
        ) from e
    if not callable(fn):
        raise UsageError(f"evaluator {spec!r} is not callable")
    return fn  # type: ignore[no-any-return]


def _npy_stream(zf: zipfile.ZipFile, name: str) -> tuple[IO[bytes], tuple[int, ...], Any]:
    import numpy as np  # noqa: PLC0415 - only the gate needs numpy

    try:
        f = zf.open(f"{name}.npy")
    except KeyError as e:
        raise EvaluationError(
            f"eval set has no array {name!r}", hint="an eval set is an .npz with arrays X and y"
        ) from e
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if fortran or dtype.hasobject:
        raise EvaluationError(
            f"eval set array {name!r} is Fortran-ordered or holds objects",
            hint="save it with np.savez(path, X=np.ascontiguousarray(X), y=y)",
        )
    return f, tuple(shape), dtype


def iter_batches(path: Path, rows: int = BATCH_ROWS) -> Iterator[tuple[Any, Any]]:
    """(X, y) batches of at most `rows` rows, read straight from the .npz."""
    import numpy as np  # noqa: PLC0415

    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise EvaluationError(
            f"cannot read eval set {path}: {e}",
            hint="an eval set is an .npz file with arrays X and y",
        ) from e
    with zf:
        fx, xshape, xdtype = _npy_stream(zf, "X")
        fy, yshape, ydtype = _npy_stream(zf, "y")
        if not xshape or not yshape or xshape[0] != yshape[0]:
            raise EvaluationError(f"eval set X{list(xshape)} and y{list(yshape)} differ in rows")
        row_x = xdtype.itemsize * math.prod(xshape[1:])
        row_y = ydtype.itemsize * math.prod(yshape[1:])
        done = 0
        while done < xshape[0]:
            n = min(rows, xshape[0] - done)
            x = np.frombuffer(fx.read(n * row_x), dtype=xdtype).reshape(n, *xshape[1:])
            y = np.frombuffer(fy.read(n * row_y), dtype=ydtype).reshape(n, *yshape[1:])
            done += n
            yield x, y


def builtin(model_dir: Path, eval_set: Path) -> dict[str, float]:
    import numpy as np  # noqa: PLC0415

    # onnxruntime ships no types; unused-ignore: our own config already skips it.
    import onnxruntime as ort  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415

    models = sorted(model_dir.glob("*.onnx"))
    if len(models) != 1:
        raise EvaluationError(
            f"the built-in evaluator needs exactly one .onnx file, found {len(models)}",
            hint="use --evaluator module:function for this model",
        )
    session = ort.InferenceSession(str(models[0]), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise EvaluationError(
            f"the model has {len(inputs)} inputs; the built-in evaluator feeds one",
            hint="use --evaluator module:function for this model",
        )
    port = inputs[0]
    in_dtype = {
        "tensor(float)": np.float32,
        "tensor(double)": np.float64,
        "tensor(int64)": np.int64,
    }.get(port.type)
    if in_dtype is None:
        raise EvaluationError(f"input {port.name!r} has type {port.type}, not a numeric tensor")
    acc = _Accumulator()
    for x, y in iter_batches(eval_set):
        expected = list(port.shape[1:])
        if len(expected) != x.ndim - 1 or any(
            isinstance(d, int) and d != got for d, got in zip(expected, x.shape[1:], strict=True)
        ):
            raise EvaluationError(
                f"eval set rows have shape {list(x.shape[1:])}, the model's input {port.name!r} "
                f"expects {list(port.shape[1:])}",
                hint="the eval set must be built for this model's features",
            )
        try:
            outputs = session.run(None, {port.name: x.astype(in_dtype, copy=False)})
        except Exception as e:
            raise EvaluationError(f"the model failed on the eval set: {str(e)[:300]}") from e
        acc.add(outputs, y)
    return acc.result()


class _Accumulator:
    def __init__(self) -> None:
        self.n = 0
        self.correct = 0
        self.log_loss_sum = 0.0
        self.has_proba = True
        self.sq = 0.0
        self.abs = 0.0
        self.kind: str | None = None

    def add(self, outputs: list[Any], y: Any) -> None:
        import numpy as np  # noqa: PLC0415

        arrays = [_as_array(o) for o in outputs]
        classification = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
        self.kind = "classification" if classification else "regression"
        self.n += len(y)
        if not classification:
            pred = next((a for a in arrays if np.issubdtype(a.dtype, np.floating)), None)
            if pred is None:
                raise EvaluationError("a regression eval set needs a float model output")
            err = pred.reshape(len(y)) - y.reshape(len(y))
            self.sq += float(np.sum(err.astype(np.float64) ** 2))
            self.abs += float(np.sum(np.abs(err)))
            return
        ints = [a for a in arrays if a.ndim == 1 and np.issubdtype(a.dtype, np.integer)]
        floats = [a for a in arrays if a.ndim == 2 and np.issubdtype(a.dtype, np.floating)]
        labels = ints[0] if ints else None
        scores = floats[0] if floats else None
        if labels is not None:
            pred = labels
        elif scores is not None:
            pred = np.argmax(scores, axis=1)
        else:
            raise EvaluationError("the model outputs neither labels nor class scores")
        self.correct += int(np.sum(pred.reshape(len(y)) == y.reshape(len(y))))
        proba_ok = (
            scores is not None
            and np.all(scores >= -1e-6)
            and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)
            and int(y.max()) < scores.shape[1]
            and int(y.min()) >= 0
        )
        if not proba_ok:
            self.has_proba = False
        elif self.has_proba and scores is not None:
            p = np.clip(scores[np.arange(len(y)), y.astype(np.int64)], 1e-15, 1.0)
            self.log_loss_sum += float(-np.sum(np.log(p)))

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise EvaluationError("the eval set has no rows")
        if self.kind == "regression":
            return {"rmse": math.sqrt(self.sq / self.n), "mae": self.abs / self.n}
        out = {"accuracy": self.correct / self.n}
        if self.has_proba:
            out["log_loss"] = self.log_loss_sum / self.n
        return out


def _as_array(value: Any) -> Any:
    """ONNX outputs as arrays; skl2onnx's ZipMap (a list of {class: p}) becomes a matrix."""
    import numpy as np  # noqa: PLC0415

    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float64)
    return np.asarray(value)
