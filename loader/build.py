"""Build one version: read its metadata, load the model (shared, private or the app's own
load function), check its signature against the live one, warm it up. Nothing here swaps."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelswap import volume

from . import onnx_model, shared
from .attempts import Identity
from .onnx_model import ModelLoadError, Signature

log = logging.getLogger("modelswap.loader")


@dataclass
class Loaded:
    """One loaded version, replaced whole on a swap. Its model is dropped when it is retired,
    so the teardown runs on the swapper thread even if the app still holds this object."""

    version: str
    path: Path
    model: Any
    metadata: dict[str, Any]
    loaded_at: str
    signature: Signature | None = None
    identity: Identity | None = field(default=None, repr=False, compare=False)
    users: int = field(default=0, repr=False, compare=False)
    retired: bool = field(default=False, repr=False, compare=False)
    _mu: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def acquire(self) -> bool:
        with self._mu:
            if self.retired:
                return False
            self.users += 1
            return True

    def release(self) -> None:
        with self._mu:
            self.users -= 1

    def retire(self) -> list[Any]:
        """The model, handed over for teardown, if no request holds it now; else []."""
        with self._mu:
            if self.users or self.retired:
                return []
            self.retired = True
            model, self.model = self.model, None
        return [model]


@dataclass(frozen=True)
class Options:
    """How to build a version: the loader's constructor arguments that concern one build."""

    load: Callable[[Path], Any] | None = None
    warmup: bool | Callable[[Any], None] = True
    warmup_max_bytes: int = onnx_model.WARMUP_MAX_BYTES
    model_file: str | None = None
    session_options: Any = None
    providers: list[str] | None = None
    allow_signature_change: bool = False
    shared: bool = False
    prepared_root: Path | None = None


@dataclass
class Built:
    loaded: Loaded
    shared_error: str | None = None  # why shared mode fell back to a private load, if it did


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_metadata(folder: Path) -> dict[str, Any]:
    try:
        value = json.loads((folder / volume.METADATA_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def build(folder: Path, identity: Identity, opts: Options, live: Loaded | None) -> Built:
    """The version in `folder`, loaded and warmed; raises ModelswapError if it cannot serve."""
    metadata = read_metadata(folder)
    version = str(metadata.get("version") or folder.name)
    if opts.load is not None:
        try:
            model = opts.load(folder)
        except Exception as e:
            raise ModelLoadError(f"load() failed: {e}") from e
        _custom_warmup(opts, model)
        return Built(Loaded(version, folder, model, metadata, now(), identity=identity))
    path = onnx_model.find_model_file(folder, opts.model_file)
    session, shared_error = None, None
    if opts.shared and opts.prepared_root is not None:
        session, shared_error = _shared_session(path, version, metadata, opts.prepared_root, opts)
    if session is None:
        session = onnx_model.create_session(path, opts.session_options, opts.providers)
    sig = onnx_model.signature(session)
    if live is not None and live.signature is not None and not opts.allow_signature_change:
        why = live.signature.incompatibility(sig)
        if why:
            raise ModelLoadError(
                f"incompatible signature: {why}",
                hint="publish a compatible model, or allow_signature_change=True",
            )
    if callable(opts.warmup):
        _custom_warmup(opts, session)
    elif opts.warmup:
        onnx_model.warm_up(session, opts.warmup_max_bytes)
    loaded = Loaded(version, folder, session, metadata, now(), sig, identity=identity)
    return Built(loaded, shared_error)


def _custom_warmup(opts: Options, model: Any) -> None:
    if callable(opts.warmup):
        try:
            opts.warmup(model)
        except Exception as e:
            raise ModelLoadError(f"warm-up failed: {e}") from e


def _shared_session(
    path: Path, version: str, metadata: dict[str, Any], root: Path, opts: Options
) -> tuple[Any, str | None]:
    """A session on this host's prepared copy, or (None, why) to load privately instead."""
    try:
        prepared = shared.prepared_model(path, version, metadata, root)
        session = onnx_model.create_session(prepared, opts.session_options, opts.providers)
    except Exception as e:  # noqa: BLE001 - any failure to share falls back to a private load
        hint = getattr(e, "hint", shared.SharedUnavailable.default_hint)
        why = f"{version}: loaded privately, shared copy unavailable: {e} (hint: {hint})"
        log.warning("loader.shared_fallback: %s", why)
        return None, why
    return session, None
