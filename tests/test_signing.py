"""Signed versions: publish --sign-key, verify/download/agent --trust-key, with real keys, real
agent processes on a local folder and on SeaweedFS, and the model_signing CLI itself."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from modelswap import keys
from modelswap.api import Registry as Api
from modelswap.errors import ObjectNotFound
from modelswap.loader import ModelLoader
from modelswap.pointers import Move, move_pointer
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing.agents import AgentProc
from modelswap.testing.faultproxy import FaultProxy
from modelswap.testing.onnx_models import scale_model
from tests.agent_helpers import FAST, linked
from tests.conftest import BUCKET, run_cli, wait_until

MakeFile = Callable[[str, bytes], Path]


def _key_pair(folder: Path, name: str) -> tuple[Path, Path, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = folder / f"{name}.pem"
    public = folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public.write_bytes(pem)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(pem)
    return private, public, "sha256:" + digest.finalize().hex()


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    return _key_pair(tmp_path_factory.mktemp("keys"), "release")


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    return _key_pair(tmp_path_factory.mktemp("keys"), "other")


def _publish(url: str, make: MakeFile, model: str, version: str, data: bytes, key: Path | None):
    path = make(f"{uuid.uuid4().hex[:6]}/model.onnx", data)
    return Api(url, actor="tester").publish(
        model, [path], version=version, sign_key=key, git_sha="0" * 40
    )


def _promote(url: str, model: str, version: str) -> None:
    move_pointer(Registry(open_store(url)), Move(model, "CURRENT", version, "promote", "tester"))


def _tamper(url: str, model: str, version: str, data: bytes) -> None:
    """What an attacker with write access does: new bytes, and metadata.json rewritten to
    match them (valid sha256 and size), leaving model.sig as it was."""
    store = open_store(url)
    meta_key = keys.metadata(model, version)
    meta = json.loads(store.read(meta_key).data)
    store.put(keys.version_file(model, version, "model.onnx"), data)
    import hashlib  # noqa: PLC0415

    meta["files"]["model.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    store.put(meta_key, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())


def _copy_version(url: str, src: tuple[str, str], dst: tuple[str, str]) -> None:
    """Copy every object of a version verbatim under another name (model.sig included)."""
    store = open_store(url)
    prefix = keys.version_prefix(*src)
    for obj in list(store.objects(prefix)):
        rest = obj.key[len(prefix) :]
        store.put(keys.version_file(*dst, rest), store.read(obj.key).data)


def _report(url: str, model: str, instance: str) -> dict[str, Any]:
    """The instance's fleet report, or {} before its first one (the agent writes it just after
    the pass that /status already shows)."""
    try:
        blob = open_store(url).read(keys.fleet_report(model, instance))
    except ObjectNotFound:
        return {}
    body: dict[str, Any] = json.loads(blob.data)
    return body


def test_the_agent_links_only_what_a_trusted_key_signed_under_that_name(
    registry_url: str, model_file: MakeFile, release: tuple[Path, Path, str], other: tuple
) -> None:
    """One real agent with --trust-key, on a local folder and on S3: a signed version is linked
    and named in /status and the fleet report; unsigned, other-key, tampered (bytes and
    metadata.json rewritten consistently) and renamed copies are refused, each with the link
    and the live copy unchanged and the reason in /status and the fleet report."""
    url, dest = registry_url, model_file("x", b"x").parent / "dest"
    _publish(url, model_file, "clf", "v1", b"good model one", release[0])
    _promote(url, "clf", "v1")
    agent = AgentProc(
        url,
        "clf",
        dest,
        *FAST,
        "--trust-key",
        str(release[1]),
        "--report",
        "--report-interval",
        "0.3",
        "--instance-id",
        "pod-a",
    ).wait_started()
    try:
        wait_until(lambda: linked(dest) == "versions/v1", timeout=20)
        wait_until(lambda: agent.status()["signed_by"] == release[2])
        assert agent.status()["trust_keys"] == [release[2]]
        assert (dest / "clf" / "versions" / "v1" / "model.sig").is_file()
        wait_until(lambda: _report(url, "clf", "pod-a").get("signed_by") == release[2])

        _publish(url, model_file, "clf", "v2", b"unsigned", None)
        _publish(url, model_file, "clf", "v3", b"signed by another key", other[0])
        _publish(url, model_file, "clf", "v4", b"signed, then rewritten", release[0])
        _tamper(url, "clf", "v4", b"attacker's bytes")
        _publish(url, model_file, "fraud", "v5", b"signed for another model", release[0])
        _copy_version(url, ("fraud", "v5"), ("clf", "v5"))
        _copy_version(url, ("clf", "v1"), ("clf", "v7"))  # signed v1, stored again as v7
        cases = {
            "v2": "is not signed",
            "v3": "which is not a --trust-key",
            "v4": "metadata.json is not the one that was signed",
            "v5": "holds a signed version of fraud/v5",
            "v7": "'version' is 'v1' but the folder is 'v7'",
        }
        refusals = agent.metric("signature_refusals_total")
        for version, why in cases.items():
            if version == "v7":  # promote refuses it; an attacker writes the pointer itself
                open_store(url).put(keys.pointer("clf", "CURRENT"), b"v7\n")
            else:
                _promote(url, "clf", version)
            wait_until(lambda why=why: why in (agent.status()["last_error"] or ""), timeout=15)
            status = agent.status()
            assert (status["active_version"], status["desired_version"]) == ("v1", version)
            assert linked(dest) == "versions/v1"
            assert status["signed_by"] == release[2]
            assert not (dest / "clf" / "versions" / version).exists()
            wait_until(lambda why=why: why in (_report(url, "clf", "pod-a")["last_error"] or ""))
        # v7's copy is refused as metadata (the name check), the other four by the signature
        assert agent.metric("signature_refusals_total") >= refusals + 4
        assert (dest / "clf" / "versions" / "v1" / "model.onnx").read_bytes() == b"good model one"
    finally:
        agent.stop()


def test_a_linked_unsigned_version_stays_linked_and_is_reported(
    tmp_path: Path, model_file: MakeFile, release: tuple[Path, Path, str]
) -> None:
    """An agent started with --trust-key on a volume whose linked version is unsigned (linked
    by an agent without keys) never deletes it: it stays linked with its bytes, --once exits 1
    saying why, and no signer is recorded for it; once the pointer names a signed version it
    is linked and its signer recorded."""
    url, dest = str(tmp_path / "reg"), tmp_path / "dest"
    _publish(url, model_file, "clf", "v1", b"unsigned", None)
    _promote(url, "clf", "v1")
    assert run_cli("agent", "clf", "--dest", str(dest), "--once", registry=url).returncode == 0
    r = run_cli(
        "agent",
        "clf",
        "--dest",
        str(dest),
        "--once",
        "--trust-key",
        str(release[1]),
        registry=url,
    )
    assert r.returncode == 1
    assert "clf/v1 is not signed" in r.stderr
    assert linked(dest) == "versions/v1"
    assert (dest / "clf" / "versions" / "v1" / "model.onnx").read_bytes() == b"unsigned"
    assert not (dest / "clf" / ".signers" / "v1.json").exists()
    _publish(url, model_file, "clf", "v2", b"signed", release[0])
    _promote(url, "clf", "v2")
    trust = tmp_path / "trust"  # a mounted ConfigMap: the key behind a ..data link
    (trust / "..data").mkdir(parents=True)
    (trust / "..data" / "release.pub").write_bytes(release[1].read_bytes())
    (trust / "release.pub").symlink_to("..data/release.pub")
    r = run_cli(
        "agent",
        "clf",
        "--dest",
        str(dest),
        "--once",
        "--trust-key",
        str(trust),
        registry=url,
    )
    assert r.returncode == 0, r.stderr
    assert linked(dest) == "versions/v2"
    record = json.loads((dest / "clf" / ".signers" / "v2.json").read_text())
    assert record["signed_by"] == release[2]


def test_the_loader_shows_which_key_signed_the_live_version(
    tmp_path: Path, release: tuple[Path, Path, str]
) -> None:
    """The loader's /health names the key the agent checked the linked version against; an
    agent without --trust-key vouches for nothing, so it shows none."""
    url, dest = str(tmp_path / "reg"), tmp_path / "dest"
    onnx = scale_model(tmp_path / "m.onnx", 2.0)
    Api(url, actor="t").publish("clf", [onnx], version="v1", sign_key=release[0])
    _promote(url, "clf", "v1")
    once = ["agent", "clf", "--dest", str(dest), "--once"]
    assert run_cli(*once, "--trust-key", str(release[1]), registry=url).returncode == 0

    def health(loader: ModelLoader) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{loader.health_port}/health") as r:
            body: dict[str, Any] = json.loads(r.read())
        return body

    with ModelLoader(dest / "clf" / "current", health_port=0) as loader:
        body = health(loader)
        assert body["model_version"] == "v1"
        assert body["signed_by"] == release[2]
        assert body["metadata"]["model"] == "clf"
        assert run_cli(*once, registry=url).returncode == 0  # no keys: no record
        assert health(loader)["signed_by"] is None


def test_a_downloaded_signed_version_verifies_with_model_signing(
    registry_url: str, model_file: MakeFile, release: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """`modelswap download` brings model.sig along, and the reference CLI accepts the copy;
    a byte changed in the copy and it refuses."""
    _publish(registry_url, model_file, "clf", "v1", b"weights" * 1000, release[0])
    copy = tmp_path / "copy"
    r = run_cli(
        "download", "clf", "v1", str(copy), "--trust-key", str(release[1]), registry=registry_url
    )
    assert r.returncode == 0, r.stderr
    cmd = [
        sys.executable,
        "-m",
        "model_signing",
        "verify",
        "key",
        str(copy),
        "--signature",
        str(copy / "model.sig"),
        "--public_key",
        str(release[1]),
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Verification succeeded" in ok.stdout
    (copy / "model.onnx").chmod(0o644)
    (copy / "model.onnx").write_bytes(b"weightz" * 1000)
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0


def test_verify_with_trust_keys_names_the_signer_and_fails_the_others(
    tmp_path: Path, model_file: MakeFile, release: tuple[Path, Path, str], other: tuple
) -> None:
    url = str(tmp_path / "reg")
    _publish(url, model_file, "clf", "v1", b"one", release[0])
    _publish(url, model_file, "clf", "v2", b"two", None)
    _publish(url, model_file, "clf", "v3", b"three", other[0])
    r = run_cli("verify", "clf", "v1", "--trust-key", str(release[1]), registry=url)
    assert r.returncode == 0, r.stderr
    assert f"v1: ok (1 file(s), 3 B; signed by {release[2]}, trusted key" in r.stdout
    r = run_cli("verify", "clf", registry=url)  # no keys: hashes checked, signers only named
    assert r.returncode == 0
    assert "not checked: no --trust-key" in r.stdout
    assert "v2: ok (1 file(s), 3 B; unsigned)" in r.stdout
    r = run_cli(
        "verify", "clf", "--json", registry=url, env={"MODELSWAP_TRUST_KEY": str(release[1])}
    )
    assert r.returncode == 1
    rows = {row["version"]: row for row in json.loads(r.stdout)}
    assert rows["v1"]["ok"]
    assert rows["v1"]["signature"]["verified"]
    assert rows["v2"]["problems"] == ["signature: clf/v2 is not signed (it has no model.sig)"]
    assert "not a --trust-key" in rows["v3"]["problems"][0]
    assert r.stderr.startswith("error: 2 of 3 version(s) failed verification")


def test_model_sig_is_written_before_metadata_json(
    s3_server: Any, model_file: MakeFile, release: tuple[Path, Path, str]
) -> None:
    """The order the store saw: every file, then model.sig, then metadata.json (last)."""
    url = f"s3://{BUCKET}/sig-{uuid.uuid4().hex[:8]}"
    with FaultProxy(s3_server.endpoint) as proxy:
        r = run_cli(
            "publish",
            "clf",
            str(model_file("model.onnx", b"m" * 100)),
            "--version",
            "v1",
            "--sign-key",
            str(release[0]),
            registry=url,
            env={"AWS_ENDPOINT_URL": proxy.endpoint},
        )
        assert r.returncode == 0, r.stderr
        puts = [s.target.split("?")[0] for s in proxy.requests if s.method == "PUT"]
    writes = [p.rsplit("/", 1)[-1] for p in puts if "/clf/v1/" in p]
    assert writes == ["model.onnx", "model.sig", "metadata.json"], puts


@pytest.mark.parametrize(
    ("make_key", "message"),
    [
        ("missing", "cannot read --sign-key"),
        ("rsa", "is a RSA key; model signing keys are elliptic-curve"),
        ("public", "is not a PEM private key"),
    ],
)
def test_a_bad_sign_key_fails_before_anything_is_written(
    tmp_path: Path,
    model_file: MakeFile,
    release: tuple[Path, Path, str],
    make_key: str,
    message: str,
) -> None:
    key = tmp_path / "key.pem"
    if make_key == "rsa":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key.write_bytes(
            rsa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    elif make_key == "public":
        key = release[1]
    url = str(tmp_path / "reg")
    r = run_cli(
        "publish", "clf", str(model_file("m.onnx", b"m")), "--sign-key", str(key), registry=url
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert lines[1].startswith("hint: ")
    assert not Path(url).exists()  # nothing written, not even the registry folder


def test_bad_trust_keys_and_a_file_named_model_sig_are_refused_clearly(
    tmp_path: Path, model_file: MakeFile, release: tuple[Path, Path, str]
) -> None:
    url = str(tmp_path / "reg")
    r = run_cli("publish", "clf", str(model_file("model.sig", b"s")), registry=url)
    assert r.returncode == 2
    assert "is the version's signature" in r.stderr
    _publish(url, model_file, "clf", "v1", b"one", release[0])
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad, why in [
        (release[0], "is not a PEM public key"),
        (empty, "holds no key files"),
        (tmp_path / "nope.pub", "cannot read --trust-key"),
    ]:
        for args in (
            ("verify", "clf", "--trust-key", str(bad)),
            ("agent", "clf", "--dest", str(tmp_path / "d"), "--once", "--trust-key", str(bad)),
        ):
            r = run_cli(*args, registry=url)
            assert r.returncode == 2, (args, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert why in lines[0], r.stderr
            assert lines[1].startswith("hint: "), r.stderr
    assert not (tmp_path / "d").exists()
