"""Train three real ONNX classifiers on scikit-learn's bundled digits, plus a fixed eval set.

    python examples/train.py OUT_DIR

v1 is good (trained on a third of the data), v2 is better (all of it), v3 is a bad deploy
waiting to happen (half its labels shuffled). eval.npz holds the held-out rows (X, y).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

SEED = 7


def to_onnx(model: LogisticRegression, n_features: int) -> bytes:
    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},  # plain label and probability tensors
        target_opset=17,
    )
    return onx.SerializeToString()  # type: ignore[no-any-return]


def train(out: Path, shuffled_share: float = 0.8) -> dict[str, float]:
    """Write out/{v1,v2,v3}/model.onnx and out/eval.npz; returns each version's accuracy."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_eval, y_train, y_eval = train_test_split(x, y, test_size=0.3, random_state=SEED)
    rng = np.random.default_rng(SEED)
    noisy = y_train.copy()
    idx = rng.choice(len(noisy), int(shuffled_share * len(noisy)), replace=False)
    noisy[idx] = rng.permutation(noisy[idx])
    third = len(x_train) // 3
    recipes = {
        "v1": (x_train[:third], y_train[:third], 0.05),
        "v2": (x_train, y_train, 1.0),
        "v3": (x_train, noisy, 1.0),
    }
    out.mkdir(parents=True, exist_ok=True)
    accuracy = {}
    for version, (xs, ys, c) in recipes.items():
        model = LogisticRegression(C=c, max_iter=2000).fit(xs, ys)
        folder = out / version
        folder.mkdir(exist_ok=True)
        (folder / "model.onnx").write_bytes(to_onnx(model, x.shape[1]))
        accuracy[version] = float(model.score(x_eval, y_eval))
    np.savez(out / "eval.npz", X=x_eval, y=y_eval)
    (out / "accuracy.json").write_text(json.dumps(accuracy, indent=2) + "\n")
    return accuracy


if __name__ == "__main__":
    print(json.dumps(train(Path(sys.argv[1] if len(sys.argv) > 1 else "trained")), indent=2))
