"""The Python API: every registry verb for pipelines, without a shell (PRODUCT.md section 7).

    import modelswap
    reg = modelswap.Registry("s3://bucket/models", actor="ci@pipeline")
    meta = reg.publish("classifier", ["model.onnx"], metrics={"accuracy": 0.94})
    reg.promote("classifier", meta.version, eval_set="eval.npz", reason="more data")

Results are frozen dataclasses; failures raise the same ModelswapError subclasses the CLI
prints as `error:` and `hint:`. The CLI is a view of this class.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modelswap import render, signing
from modelswap.cleanup import GcReport, collect_garbage
from modelswap.config import DEFAULT_REGISTRY, default_actor
from modelswap.download import download_into
from modelswap.errors import (
    GateRefused,
    InvalidMetadata,
    ModelswapError,
    SignatureError,
    UsageError,
)
from modelswap.evaluate import EvaluationError
from modelswap.fleet import fleet_status
from modelswap.gate import (
    DEFAULT_TOLERANCE,
    GateError,
    GateResult,
    GateSpec,
    parse_metric,
    run_gate,
)
from modelswap.gitinfo import head_sha
from modelswap.metadata import Metadata
from modelswap.names import POINTER_RE, check_model, check_pointer_name, check_version
from modelswap.pointers import (
    DEFAULT_POINTER,
    Move,
    history,
    list_pointers,
    move_pointer,
    read_pointer,
    require_pointer,
    rollback_plan,
)
from modelswap.publish import METADATA_KEYS, PublishRequest, collect_files, publish
from modelswap.records import Event, FleetStatus, GateRecord
from modelswap.registry import Registry as _Versions
from modelswap.results import History, ProgressSink, PromoteResult, SignatureInfo, VersionInfo
from modelswap.store import StoreOptions, open_store
from modelswap.store.local import LocalStore

Evaluator = Callable[[Path, Path], dict[str, float]]
KeyPaths = Sequence[str | os.PathLike[str]]
GC_KEEP = 5  # gc keeps this many newest versions (and those of the last GC_KEEP events)
STALE_AFTER_S = 90.0  # an instance silent this long is stale in `status`
STORE_TIMEOUT_S = StoreOptions.read_timeout_s


def is_pointer_name(name: str) -> bool:
    """CURRENT, CANARY, ...: upper-case names are pointers, lower-case ones versions."""
    return POINTER_RE.fullmatch(name) is not None


class Registry:
    """A registry at `url` (s3://bucket/prefix, file:///path or a folder), acting as `actor`
    (default `$USER@host`), recorded in every event."""

    def __init__(
        self,
        url: str | os.PathLike[str] = DEFAULT_REGISTRY,
        *,
        actor: str | None = None,
        store_timeout_s: float = STORE_TIMEOUT_S,
    ) -> None:
        options = StoreOptions(read_timeout_s=store_timeout_s)
        problems = options.validate()
        if problems:
            raise UsageError(problems[0].replace("--store-timeout", "store_timeout_s"))
        self.url = os.fspath(url)
        self.actor = actor or default_actor()
        self._versions = _Versions(open_store(self.url, options))

    @property
    def store_url(self) -> str:
        return self._versions.store.url

    # -- versions --------------------------------------------------------------------------

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

    def versions(
        self, model: str, *, warnings: list[ModelswapError] | None = None
    ) -> list[VersionInfo]:
        """Every version folder, complete or not, with the pointers naming it. Malformed
        pointers are left out of the rows and appended to `warnings` when given."""
        metas = self._versions.all_metadata(check_model(model))
        named, problems = self._pointers(model)
        if warnings is not None:
            warnings.extend(problems)
        rows = []
        for v, m in metas.items():
            ok = isinstance(m, Metadata)
            rows.append(
                VersionInfo(
                    version=v,
                    created=m.created if isinstance(m, Metadata) else None,
                    size=m.size if isinstance(m, Metadata) else 0,
                    metrics=m.metrics if isinstance(m, Metadata) else {},
                    pointers=tuple(sorted(named.get(v, []))),
                    complete=ok,
                    problem=None if ok else ("invalid metadata.json" if m else "incomplete"),
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
                if trusted:
                    try:
                        self._versions.check_signature(model, v, trusted, meta)
                    except SignatureError as e:
                        out[v].append(f"signature: {e}")
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
        sig = self._versions.signature(model, version)
        claimed = signing.claimed_signer(sig)
        if not trust_keys:
            return SignatureInfo(version, sig is not None, claimed, False, None, None)
        try:
            key = self._versions.check_signature(
                model, version, signing.load_trusted_keys(trust_keys), meta
            )
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

    # -- pointers --------------------------------------------------------------------------

    def gate(
        self,
        model: str,
        candidate: str,
        *,
        eval_set: str | os.PathLike[str],
        metric: str = "accuracy",
        tolerance: float = DEFAULT_TOLERANCE,
        evaluator: str | Evaluator | None = None,
        minimum: float | None = None,
        against: str | None = None,
        pointer: str = DEFAULT_POINTER,
        progress: ProgressSink | None = None,
    ) -> GateResult:
        """Evaluate candidate and `against` (default: what the pointer names) on one eval
        set; `.passed` says whether the candidate may go live. `progress` is told the bytes
        of both versions' downloads."""
        return self._gate(
            model,
            candidate,
            GateSpec(Path(eval_set), *parse_metric(metric), tolerance, evaluator, minimum),
            against=against,
            pointer=pointer,
            progress=progress,
        )

    def _gate(
        self,
        model: str,
        candidate: str,
        spec: GateSpec,
        *,
        against: str | None,
        pointer: str,
        progress: ProgressSink | None = None,
        for_promote: bool = False,
    ) -> GateResult:
        return run_gate(
            self._versions,
            check_model(model),
            check_version(candidate),
            spec,
            against=check_version(against) if against else None,
            pointer=check_pointer_name(pointer),
            progress=progress,
            for_promote=for_promote,
        )

    def promote(
        self,
        model: str,
        version: str,
        *,
        pointer: str = DEFAULT_POINTER,
        reason: str | None = None,
        expect: str | None = None,
        verify: bool = False,
        eval_set: str | os.PathLike[str] | None = None,
        metric: str = "accuracy",
        tolerance: float = DEFAULT_TOLERANCE,
        evaluator: str | Evaluator | None = None,
        minimum: float | None = None,
        force: bool = False,
    ) -> PromoteResult:
        """Move the pointer to version by compare-and-swap, gated when eval_set is given. A
        refusing gate raises GateRefused (carrying the result) unless force=True, which needs
        a reason and is recorded in the event."""
        model, pointer = check_model(model), check_pointer_name(pointer)
        version = check_version(version)
        if force and not reason:
            raise UsageError("force needs a reason", hint='e.g. reason="hotfix, eval set stale"')
        if force and eval_set is None:
            raise UsageError(
                "force overrides a gate; give the gate's eval_set too",
                hint="without gate options promote is not gated and needs no force",
            )
        expect = check_version(expect) if expect else None
        gate_record: GateRecord | None = None
        result: GateResult | None = None
        if eval_set is not None:
            # The gate's options are checked before the store is touched.
            spec = GateSpec(Path(eval_set), *parse_metric(metric), tolerance, evaluator, minimum)
            state = read_pointer(self._versions, model, pointer)
            against = state.version if state else None
            try:
                result = self._gate(
                    model, version, spec, against=against, pointer=pointer, for_promote=True
                )
            except (GateError, EvaluationError) as e:  # a gate that cannot judge refuses...
                if not force:  # ...unless forced, and then the error is what is recorded
                    if "--force" not in e.hint:
                        e.hint += "; or promote anyway with --force --reason (recorded)"
                    raise
                gate_record = GateRecord(
                    passed=False, forced=True, forced_by=self.actor, error=str(e)
                )
            else:
                if not result.passed and not force:
                    raise GateRefused(result, model, pointer, against)
                gate_record = result.record(forced_by=self.actor if not result.passed else None)
            expect = expect or against  # the pointer must not move while we evaluated
        move = Move(
            model, pointer, version, "promote", self.actor, reason, gate_record, expect, verify
        )
        event = move_pointer(self._versions, move)
        forced = gate_record is not None and gate_record.forced
        return PromoteResult(model, pointer, version, event, result, forced)

    def rollback(
        self,
        model: str,
        *,
        to: str | None = None,
        pointer: str = DEFAULT_POINTER,
        reason: str | None = None,
    ) -> PromoteResult:
        """Move the pointer back to the version live before (by the log), or to `to`."""
        model, pointer = check_model(model), check_pointer_name(pointer)
        if to:
            target, expect = check_version(to), None
        else:  # back from exactly the version the log was read for
            target, expect = rollback_plan(self._versions, model, pointer)
        move = Move(model, pointer, target, "rollback", self.actor, reason, None, expect)
        return PromoteResult(model, pointer, target, move_pointer(self._versions, move))

    def history(self, model: str) -> History:
        problems: list[ModelswapError] = []
        events = history(self._versions, check_model(model), problems)
        return History(tuple(events), tuple(problems))

    def status(
        self, model: str, *, pointer: str = DEFAULT_POINTER, stale_after_s: float = STALE_AFTER_S
    ) -> FleetStatus:
        """Every agent's report for the pointer and whether the fleet converged on it."""
        return fleet_status(
            self._versions, check_model(model), check_pointer_name(pointer), stale_after_s
        )


__all__ = [
    "DEFAULT_POINTER",
    "DEFAULT_TOLERANCE",
    "GC_KEEP",
    "METADATA_KEYS",
    "STALE_AFTER_S",
    "STORE_TIMEOUT_S",
    "Evaluator",
    "Event",
    "FleetStatus",
    "GateRecord",
    "GateResult",
    "GcReport",
    "History",
    "Metadata",
    "ProgressSink",
    "PromoteResult",
    "Registry",
    "SignatureInfo",
    "VersionInfo",
    "is_pointer_name",
]
