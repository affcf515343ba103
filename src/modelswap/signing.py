"""Signed versions in the OpenSSF model signing format, through its reference library.

A signature (`<model>/<version>/model.sig`, a Sigstore bundle holding a DSSE envelope over an
in-toto statement) lists every file of the version with its sha256, metadata.json included.
metadata.json names the model and the version and lists every other file's sha256, so one
signature over it binds the name and the bytes.

Neither side reads a model file twice: publish signs the digests it computed while uploading,
and a check compares the signed digests with metadata.json's (the agent then verifies the bytes
against those while streaming them, as for every version). `model_signing verify key` accepts
a downloaded copy, since the statement is the one its own signer writes (serialization
"files", sha256, model.sig ignored).

model_signing (and sigstore under it) costs ~0.7 s to import, so it is imported only when a
key is loaded; nothing imports it for an unsigned registry.
"""

# ruff: noqa: PLC0415 - cryptography and model_signing are imported when a key is used
from __future__ import annotations

import binascii
import hashlib
import json
import os
import pathlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelswap.errors import SignatureError, UsageError
from modelswap.metadata import METADATA_FILE, Metadata

SIGNATURE_FILE = "model.sig"
SIGNATURE_MAX_BYTES = 16 << 20
PASSWORD_VARIABLE = "MODELSWAP_SIGN_KEY_PASSWORD"  # noqa: S105 - its name, not a value
_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model_signing's key signer takes
_NEW_KEY = "openssl ecparam -name prime256v1 -genkey -noout -out release.pem"


def _library() -> Any:
    try:
        from model_signing._signing import sign_ec_key
    except ImportError as e:
        raise UsageError(
            f"signing needs the model-signing library ({e.name} is not installed)",
            hint="pip install 'modelswap[sign]'",
        ) from e
    return sign_ec_key


def fingerprint_of(public_pem: bytes) -> str:
    """sha256 of the PEM public key: the `hint` model_signing writes into every bundle."""
    return "sha256:" + hashlib.sha256(public_pem).hexdigest()


def short(fingerprint: str) -> str:
    return fingerprint[: len("sha256:") + 16]


@dataclass(frozen=True)
class SigningKey:
    path: Path
    fingerprint: str
    signer: Any  # model_signing's elliptic-curve Signer


@dataclass(frozen=True)
class TrustedKey:
    path: Path
    fingerprint: str
    verifier: Any  # model_signing's elliptic-curve Verifier


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """An elliptic-curve private key (PEM); encrypted keys take MODELSWAP_SIGN_KEY_PASSWORD.
    Loaded before any upload, so a bad key fails the publish with nothing written."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p = Path(path)
    data = _read_key(p, "--sign-key")
    password = os.environ.get(PASSWORD_VARIABLE)
    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError as e:  # encrypted without a password, or a password for a plain key
        raise UsageError(
            f"--sign-key {p}: {e}",
            hint=f"set {PASSWORD_VARIABLE} for an encrypted key, unset it for a plain one",
        ) from e
    except ValueError as e:
        raise UsageError(
            f"--sign-key {p} is not a PEM private key (or the password is wrong)",
            hint=f"make a release key with `{_NEW_KEY}`",
        ) from e
    what, hint = f"--sign-key {p}", f"make one with `{_NEW_KEY}`"
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise _not_ec(key, what, hint)
    fingerprint = _ec_fingerprint(key.public_key(), what, hint)
    return SigningKey(p, fingerprint, _library().Signer(p, password))


def load_trusted_keys(paths: Iterable[str | os.PathLike[str]]) -> list[TrustedKey]:
    """Public keys from files, or from every file in a folder (a mounted Secret or ConfigMap;
    its `..data` entries are skipped). Any one of them suffices to accept a version."""
    found: dict[str, TrustedKey] = {}
    for given in paths:
        p = Path(given)
        files = [p]
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if not f.name.startswith(".") and f.is_file())
            if not files:
                raise UsageError(
                    f"--trust-key folder {p} holds no key files",
                    hint="mount the release key's public half (PEM) into it",
                )
        for f in files:
            key = _trusted(f)
            found.setdefault(key.fingerprint, key)
    return list(found.values())


def _trusted(path: Path) -> TrustedKey:
    from cryptography.hazmat.primitives import serialization

    data = _read_key(path, "--trust-key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        hint = "pass the public half: `openssl ec -in release.pem -pubout -out release.pub`"
        raise UsageError(f"--trust-key {path} is not a PEM public key", hint=hint) from e
    fingerprint = _ec_fingerprint(
        key, f"--trust-key {path}", "pass the public half of the key publish signs with"
    )
    return TrustedKey(path, fingerprint, _library().Verifier(path))


def _ec_fingerprint(public: Any, what: str, hint: str) -> str:
    """The fingerprint of an elliptic-curve public key model signing takes; else UsageError."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name not in _CURVES:
        raise _not_ec(public, what, hint)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return fingerprint_of(pem)


def _not_ec(key: Any, what: str, hint: str) -> UsageError:
    return UsageError(
        f"{what} is a {_kind(key)} key; model signing keys are elliptic-curve P-256, P-384 "
        "or P-521",
        hint=hint,
    )


def _read_key(path: Path, flag: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(
            f"cannot read {flag} {path}: {e.strerror}",
            hint="mount the key file (a Kubernetes Secret) or fix the path",
        ) from e
    if len(data) > 1 << 20:
        raise UsageError(f"{flag} {path} is {len(data)} bytes, too large for a PEM key")
    return data


def _kind(key: Any) -> str:
    curve = getattr(key, "curve", None)
    if curve is not None:
        return f"elliptic-curve {curve.name}"
    return type(key).__name__.lstrip("_").replace("PrivateKey", "").replace("PublicKey", "")


# -- signing and checking ------------------------------------------------------------------


def sign(key: SigningKey, model: str, version: str, meta: Metadata) -> bytes:
    """model.sig for a version: its files' sha256 (from metadata.json) and metadata.json's."""
    if SIGNATURE_FILE in meta.files:
        raise UsageError(f"{model}/{version} has a file named {SIGNATURE_FILE}, the signature's")
    from model_signing._signing import signing as ms_signing

    manifest = _manifest(f"{model}/{version}", _expected(meta))
    bundle = key.signer.sign(ms_signing.Payload(manifest)).bundle
    return str(bundle.to_json()).encode()


def check(
    trusted: list[TrustedKey],
    model: str,
    version: str,
    meta: Metadata,
    signature: bytes | None,
) -> TrustedKey:
    """The trusted key that signed exactly this version under exactly this name; else
    SignatureError saying why (unsigned, unknown key, bad signature, rewritten after signing,
    or signed as another model or version)."""
    name = f"{model}/{version}"
    if signature is None:
        raise SignatureError(
            f"{name} is not signed (it has no {SIGNATURE_FILE})",
            hint="publish it with --sign-key, or promote a signed version",
        )
    bundle, hint = _bundle(signature, name)
    candidates = [k for k in trusted if not hint or k.fingerprint == "sha256:" + hint]
    if not candidates:
        raise SignatureError(
            f"{name} is signed by key {short('sha256:' + hint)}..., which is not a --trust-key",
            hint="trusted: " + ", ".join(f"{short(k.fingerprint)}... ({k.path})" for k in trusted),
        )
    manifest, signer = None, None
    for key in candidates:
        try:
            manifest = key.verifier.verify(bundle)
        except Exception:  # noqa: BLE001, S112 - cryptography, protobuf and json all raise
            continue
        signer = key
        break
    if manifest is None or signer is None:
        raise SignatureError(
            f"{name}: {SIGNATURE_FILE} does not verify with any --trust-key (forged, or damaged)",
            hint="re-publish the version with --sign-key; never link it",
        )
    _compare(manifest, meta, name)
    if meta.model != model or meta.version != version:
        raise SignatureError(
            f"{name} holds a signed version of {meta.model or '(no model)'}/{meta.version}: "
            "a signed version copied under another name is never linked",
            hint=f"promote the version under its signed name, or publish {name} with --sign-key",
        )
    return signer


def claimed_signer(signature: bytes | None) -> str | None:
    """The key a model.sig says signed it (not checked): for display only."""
    if signature is None:
        return None
    try:
        hint = json.loads(signature)["verificationMaterial"]["publicKey"]["hint"]
    except (ValueError, KeyError, TypeError):
        return None
    return "sha256:" + hint if isinstance(hint, str) and hint else None


def _expected(meta: Metadata) -> dict[str, str]:
    digests = {name: entry.sha256 for name, entry in meta.files.items()}
    digests[METADATA_FILE] = hashlib.sha256(meta.stored_bytes).hexdigest()
    return digests


def _manifest(model_name: str, digests: dict[str, str]) -> Any:
    from model_signing import manifest
    from model_signing._hashing import hashing

    items = [
        manifest.FileManifestItem(
            path=pathlib.PurePosixPath(name), digest=hashing.Digest("sha256", bytes.fromhex(hx))
        )
        for name, hx in sorted(digests.items())
    ]
    # model.sig lies inside the version folder: ignored, as model_signing's own signer does.
    serialization = manifest._FileSerialization("sha256", False, [Path(SIGNATURE_FILE)])
    return manifest.Manifest(model_name, items, serialization)


def _bundle(signature: bytes, name: str) -> tuple[Any, str]:
    """The parsed bundle, as model_signing's own reader fixes it up, and its key hint."""
    from model_signing._signing import sign_sigstore_pb
    from sigstore_models.bundle import v1 as bundle_pb

    try:
        raw = json.loads(signature)
        material = raw["verificationMaterial"]
        material.setdefault("tlogEntries", [])
        public = material.get("publicKey")
        if isinstance(public, dict):
            public.setdefault("hint", None)
            for k in ("rawBytes", "keyDetails"):
                public.pop(k, None)
        bundle = sign_sigstore_pb.Signature(bundle_pb.Bundle.from_dict(raw))
        envelope = bundle.bundle.dsse_envelope
        if envelope is None or not envelope.signatures:
            raise ValueError("no DSSE envelope with a signature")
        hint = (public or {}).get("hint") or ""
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
        raise SignatureError(
            f"{name}: {SIGNATURE_FILE} is not a model signing bundle ({type(e).__name__}: {e})",
            hint="model.sig is written by `modelswap publish --sign-key`; re-publish the version",
        ) from e
    return bundle, str(hint)


def _compare(manifest: Any, meta: Metadata, name: str) -> None:
    """The signed file list against metadata.json's: same names, same sha256, metadata.json's
    own digest included. Only "files" with sha256 can be checked without reading the files."""
    params = manifest.serialization_type
    if params.get("method") != "files" or params.get("hash_type") != "sha256":
        raise SignatureError(
            f"{name}: {SIGNATURE_FILE} hashes by {params.get('method')}/"
            f"{params.get('hash_type')}; modelswap checks files/sha256 signatures",
            hint="sign with `modelswap publish --sign-key` (or model_signing's defaults)",
        )
    signed = {str(d.identifier): d.digest for d in manifest.resource_descriptors()}
    expected = _expected(meta)
    if signed.get(METADATA_FILE) is None or signed[METADATA_FILE].digest_hex != expected.get(
        METADATA_FILE
    ):
        raise SignatureError(
            f"{name}: {METADATA_FILE} is not the one that was signed (rewritten after signing)",
            hint="the version was changed after publish; it is never linked. Re-publish it",
        )
    missing = sorted(set(expected) - set(signed))
    extra = sorted(set(signed) - set(expected))
    if missing or extra:
        what = f"{missing[0]} is not signed" if missing else f"signed {extra[0]} is not listed"
        raise SignatureError(f"{name}: {what}", hint="re-publish the version with --sign-key")
    for file, digest in signed.items():
        if digest.algorithm != "sha256" or digest.digest_hex != expected[file]:
            raise SignatureError(
                f"{name}: {file}'s sha256 is not the signed one",
                hint="the version was changed after publish; it is never linked. Re-publish it",
            )
