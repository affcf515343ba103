"""The version verbs of modelswap.Registry (publish, list, read, verify, download, gc), as a
base class so api.py stays one screenful per concern; api.Registry is the class to use."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelswap import render, signing
from modelswap.cleanup import GcReport, collect_garbage
from modelswap.download import download_into
from modelswap.errors import InvalidMetadata, ModelswapError, SignatureError, UsageError
from modelswap.gitinfo import head_sha
from modelswap.metadata import Metadata
from modelswap.names import POINTER_RE, check_model, check_pointer_name, check_version
from modelswap.pointers import DEFAULT_POINTER, list_pointers, require_pointer
from modelswap.publish import METADATA_KEYS, PublishRequest, collect_files, publish
from modelswap.records import text_or_none
from modelswap.registry import Registry as _Versions
from modelswap.results import ProgressSink, SignatureInfo, VersionInfo
from modelswap.store.local import LocalStore

KeyPaths = Sequence[str | os.PathLike[str]]
GC_KEEP = 5  # gc keeps this many newest versions (and those of the last GC_KEEP events)


def is_pointer_name(name: str) -> bool:
    """CURRENT, CANARY, ...: upper-case names are pointers, lower-case ones versions."""
    return POINTER_RE.fullmatch(name) is not None


class VersionVerbs:
    _versions: _Versions
    actor: str

    def publish(
        self,
        model: str,
        files: Sequence[str | os.PathLike[str]],
        *,
        version: str | None = None,
        metrics: dict[str, float] | None = None,
        training_data: str | None = None,
        notes: str | None = None,
        meta: dict[str, Any] | None = None,
        git_sha: str | None = None,
        progress: ProgressSink | None = None,
        sign_key: str | os.PathLike[str] | None = None,
    ) -> Metadata:
        """Upload a new immutable version (the next vN without `version`); git_sha defaults
        to HEAD of the working folder's git tree, with `git_dirty` if it had changes. With
        `sign_key` (an elliptic-curve PEM private key) the version is signed: model.sig in
        the OpenSSF model signing format, written before metadata.json."""
        key = signing.load_signing_key(sign_key) if sign_key is not None else None
        extra = dict(meta or {})
        clashes = sorted(set(extra) & METADATA_KEYS)
        if clashes:
            raise UsageError(f"meta key {clashes[0]!r} would overwrite a field modelswap sets")
        sha, dirty = (git_sha, False) if git_sha else head_sha(Path.cwd())
        if dirty:
            extra.setdefault("git_dirty", True)
        check_model(model)
        collected = collect_files([Path(f) for f in files])
        if progress is not None:
            progress.start(sum(p.stat().st_size for p in collected.values()))
        req = PublishRequest(
            model=model,
            files=collected,
            version=version,
            training_data=training_data,
            notes=notes,
            metrics=dict(metrics or {}),
            extra=extra,
            git_sha=sha,
            actor=self.actor,
            progress=progress.add if progress is not None else None,
            sign_key=key,
        )
        return publish(self._versions, req)

    @property
    def creates_folder(self) -> bool:
        """A local registry whose folder does not exist yet: the first publish creates it
        (the CLI says so, naming it)."""
        store = self._versions.store
        return isinstance(store, LocalStore) and not store.root.exists()

    def models(self) -> list[str]:
        """Every model in the registry, sorted."""
        return self._versions.models()

    def versions(
        self, model: str, *, warnings: list[ModelswapError] | None = None
    ) -> list[VersionInfo]:
        """Every version folder, complete or not, with the pointers naming it. Malformed
        pointers are left out of the rows and appended to `warnings` when given."""
        listing = self._versions.version_listing(check_model(model))
        metas = self._versions.all_metadata(model, listing)
        named, problems = self._pointers(model)
        if warnings is not None:
            warnings.extend(problems)
        rows = []
        for v, m in metas.items():
            ok = isinstance(m, Metadata)
            raw = m.raw if isinstance(m, Metadata) else {}
            rows.append(
                VersionInfo(
                    version=v,
                    created=m.created if isinstance(m, Metadata) else None,
                    size=m.size if isinstance(m, Metadata) else 0,
                    metrics=m.metrics if isinstance(m, Metadata) else {},
                    pointers=tuple(sorted(named.get(v, []))),
                    complete=ok,
                    problem=None if ok else ("invalid metadata.json" if m else "incomplete"),
                    git_sha=text_or_none(raw.get("git_sha")),
                    training_data=text_or_none(raw.get("training_data")),
                    signed=signing.SIGNATURE_FILE in listing[v],
                )
            )
        return rows

    def pointer_problems(self, model: str) -> list[ModelswapError]:
        """Malformed pointers of the model (each an InvalidPointer naming the object)."""
        return self._pointers(check_model(model))[1]

    def pointer_names(self, model: str) -> dict[str, list[str]]:
        """Which pointers name each version (malformed pointers are left out)."""
        return self._pointers(check_model(model))[0]

    def _pointers(self, model: str) -> tuple[dict[str, list[str]], list[ModelswapError]]:
        """One listing of the pointers: the names per version, and the malformed ones."""
        named: dict[str, list[str]] = {}
        problems: list[ModelswapError] = []
        for name, state in list_pointers(self._versions, model).items():
            if isinstance(state, ModelswapError):
                problems.append(state)
            else:
                named.setdefault(state.version, []).append(name)
        return named, problems

    def pointer_version(self, model: str, pointer: str = DEFAULT_POINTER) -> str:
        """The version a pointer names now (PointerNotFound when it has none)."""
        return require_pointer(
            self._versions, check_model(model), check_pointer_name(pointer)
        ).version

    def show(self, model: str, version: str | None = None) -> Metadata:
        """One version's metadata (default: the one CURRENT names)."""
        check_model(model)
        version = version or require_pointer(self._versions, model, DEFAULT_POINTER).version
        return self._versions.metadata(model, check_version(version))

    def diff(self, model: str, a: str, b: str) -> list[str]:
        """What changed between two versions' metadata and files, one line per change."""
        return render.diff(self.show(model, a), self.show(model, b))

    def verify(
        self,
        model: str,
        version: str | None = None,
        progress: ProgressSink | None = None,
        trust_keys: KeyPaths | None = None,
    ) -> dict[str, list[str]]:
        """Problems per version after re-reading every stored byte (an empty list: intact).
        With `trust_keys` (public keys, or folders of them) a version that none of them
        signed under its own name is a problem too."""
        check_model(model)
        trusted = signing.load_trusted_keys(trust_keys) if trust_keys else []
        names = [check_version(version)] if version else None
        metas: dict[str, Metadata | InvalidMetadata | None] = (
            {v: self._versions.metadata(model, v) for v in names}
            if names
            else self._versions.all_metadata(model)
        )
        out: dict[str, list[str]] = {}
        if progress is not None:
            progress.start(sum(m.size for m in metas.values() if isinstance(m, Metadata)))
        for v, meta in metas.items():
            if isinstance(meta, Metadata):
                out[v] = self._versions.verify(model, v, progress.add if progress else None)
                problem = self._signature(model, v, meta, trusted).problem if trusted else None
                if problem:
                    out[v].append(f"signature: {problem}")
            else:
                out[v] = [f"INVALID: {meta}" if meta else "INCOMPLETE (no metadata.json)"]
        return out

    def signature(
        self, model: str, version: str, trust_keys: KeyPaths | None = None
    ) -> SignatureInfo:
        """Who signed a version: checked when `trust_keys` are given (a refusal is in
        `problem`), else only the key the signature names."""
        check_model(model)
        meta = self._versions.metadata(model, check_version(version))
        trusted = signing.load_trusted_keys(trust_keys) if trust_keys else []
        return self._signature(model, version, meta, trusted)

    def _signature(
        self, model: str, version: str, meta: Metadata, trusted: list[signing.TrustedKey]
    ) -> SignatureInfo:
        sig = self._versions.signature(model, version)
        claimed = signing.claimed_signer(sig)
        if not trusted:
            return SignatureInfo(version, sig is not None, claimed, False, None, None)
        try:
            key = signing.check(trusted, model, version, meta, sig)
        except SignatureError as e:
            return SignatureInfo(version, sig is not None, claimed, False, None, str(e))
        return SignatureInfo(version, True, key.fingerprint, True, str(key.path), None)

    def gc(self, model: str, *, keep: int = GC_KEEP, dry_run: bool = False) -> GcReport:
        """Delete versions no pointer, recent event or the `keep` newest need (and leftovers
        of interrupted publishes); dry_run only reports."""
        return collect_garbage(
            self._versions, check_model(model), keep=keep, dry_run=dry_run, actor=self.actor
        )

    def download(
        self,
        model: str,
        version_or_pointer: str,
        dest: str | os.PathLike[str],
        progress: ProgressSink | None = None,
        trust_keys: KeyPaths | None = None,
    ) -> Path:
        """A verified copy of a version (or of the one a pointer names) in folder `dest`,
        which must not exist yet: it appears by rename once every file matched its sha256.
        Its model.sig comes along; with `trust_keys` an unsigned or untrusted version is
        refused before any file is fetched."""
        check_model(model)
        version = version_or_pointer
        if is_pointer_name(version_or_pointer):
            version = require_pointer(self._versions, model, version_or_pointer).version
        meta = self._versions.metadata(model, check_version(version))
        sig = self._versions.signature(model, version)
        if trust_keys:
            signing.check(signing.load_trusted_keys(trust_keys), model, version, meta, sig)
        if progress is not None:
            progress.start(meta.size)
        return download_into(
            self._versions.store,
            model,
            meta,
            Path(dest),
            on_bytes=progress.add if progress else None,
            signature=sig,
        )
