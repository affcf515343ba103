"""What the agent tests share: publishing and promoting on the registry, reading the volume."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from modelswap.pointers import Move, move_pointer
from modelswap.publish import PublishRequest
from modelswap.publish import publish as publish_request
from modelswap.registry import Registry

MakeFile = Callable[[str, bytes], Path]
FAST = ("--interval", "0.3", "--max-backoff", "1")


def publish(registry: Registry, make: MakeFile, data: bytes, version: str) -> None:
    files = {"model.onnx": make("model.onnx", data)}
    publish_request(registry, PublishRequest(model="clf", files=files, version=version))


def promote(registry: Registry, version: str, kind: str = "promote") -> None:
    move_pointer(registry, Move("clf", "CURRENT", version, kind, "tester"))


def linked(dest: Path) -> str | None:
    try:
        return os.readlink(dest / "clf" / "current")
    except OSError:
        return None


def tree(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
