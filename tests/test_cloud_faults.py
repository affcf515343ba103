"""What a review of the gs:// and az:// backends found, each pinned by a test: a reply cut
mid-body after a write, a trickling read, a missing bucket read as a missing object, bytes
that change between an upload's attempts, failures that never sent anything."""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import urllib3.exceptions

from modelswap.errors import ObjectNotFound, OutcomeUnknown, StoreUnavailable, UsageError
from modelswap.store import StoreOptions, open_store
from modelswap.store.gcs_errors import write_outcome
from modelswap.store.settle import AMBIGUOUS, UploadBody, settle
from modelswap.testing import emulators
from modelswap.testing.faultproxy import Fault, FaultProxy

SLOW = StoreOptions(connect_timeout_s=2, read_timeout_s=1, min_rate_bps=64 << 10)


@pytest.fixture(params=["gcs", "azure"])
def via_proxy(request: pytest.FixtureRequest) -> Iterator[tuple[str, FaultProxy]]:
    """(a registry root URL, the fault proxy its requests go through); the emulator's
    variables point at the proxy while inside."""
    emu: emulators.Emulator = request.getfixturevalue(f"{request.param}_server")
    host = emu.endpoint.split("/devstoreaccount1")[0]
    with FaultProxy(host) as proxy:
        routed = {k: v.replace(host, proxy.endpoint) for k, v in emu.env.items()}
        saved = {k: os.environ[k] for k in routed}
        os.environ.update(routed)
        try:
            scheme = "gs" if request.param == "gcs" else "az"
            yield f"{scheme}://{emu.bucket}/cf-{uuid.uuid4().hex[:8]}", proxy
        finally:
            os.environ.update(saved)


def test_a_write_whose_reply_is_cut_mid_body_is_settled(
    via_proxy: tuple[str, FaultProxy],
) -> None:
    """The store commits a create-only write and the reply breaks after its headers: the
    write is read back and reported as done (it was reported as "cannot reach", and a
    promote then removed the event of a move that had happened)."""
    url, proxy = via_proxy
    store = open_store(url)
    method = "POST" if url.startswith("gs://") else "PUT"
    fault = proxy.add(Fault("reset_response", method=method))
    etag = store.put_new("m/v1/metadata.json", b'{"version": "v1"}')
    assert proxy.fired(fault) == 1
    assert store.read("m/v1/metadata.json").etag == etag


def test_a_trickling_read_is_abandoned_within_seconds(via_proxy: tuple[str, FaultProxy]) -> None:
    """A body trickling at 2 KB/s against a 64 KiB/s limit fails within a few seconds on
    both (Azure's downloader read whole 1 MiB chunks, so a trickle took minutes)."""
    url, proxy = via_proxy
    open_store(url).put("m/v1/model.onnx", os.urandom(1 << 20))
    proxy.add(Fault("trickle", method="GET", path="model.onnx", rate=2048))
    store = open_store(url, SLOW)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"too slow|broke"):
        b"".join(store.iter_chunks("m/v1/model.onnx"))
    assert time.monotonic() - started < 15


def test_a_missing_bucket_is_named_and_a_missing_object_is_not_one(
    gcs_server: emulators.Emulator,
) -> None:
    """A 404 says nothing about which is missing (real GCS names the object, and a name may
    hold the word "bucket"): the store asks. Writes, listings and deletes on a missing bucket
    name it; a missing object in a bucket called model-bucket-1 is just not found."""
    req = urllib.request.Request(  # noqa: S310 - the emulator on loopback
        f"{gcs_server.endpoint}/storage/v1/b?project=modelswap-emulator",
        data=b'{"name": "model-bucket-1"}',
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=5).close()  # noqa: S310
    with pytest.raises(ObjectNotFound):
        open_store("gs://model-bucket-1/bucket-models").read("clf/CURRENT")
    gone = open_store("gs://no-such-bucket-2/models")
    for action in (
        lambda: gone.put_new("clf/v1/metadata.json", b"{}"),
        lambda: list(gone.objects("clf/")),
        lambda: gone.delete("clf/CURRENT"),
        lambda: gone.read("clf/CURRENT"),
    ):
        with pytest.raises(StoreUnavailable, match="bucket 'no-such-bucket-2' does not exist"):
            action()


def test_bytes_that_change_between_attempts_fail_the_upload(tmp_path: Path) -> None:
    """Every attempt of an upload sends the file from its start; the first is what callers
    hash for metadata.json, and a later one that reads other bytes fails instead of storing
    bytes that metadata.json does not describe."""
    path = tmp_path / "model.bin"
    path.write_bytes(b"a" * 3000)
    seen: list[bytes] = []
    with path.open("rb") as src:
        body = UploadBody(src, seen.append, contextlib.ExitStack())
        first = body.attempt()
        assert first.read(1000) + first.read() == b"a" * 3000
        body.sent(first)
        path.write_bytes(b"b" * 3000)  # a training job still writing it
        second = body.attempt()
        second.read()
        with pytest.raises(UsageError, match="changed while it was sent"):
            body.sent(second)
    assert b"".join(seen) == b"a" * 3000  # only the first attempt is hashed


def test_a_failure_that_sent_nothing_is_definite_and_a_cut_reply_is_not() -> None:
    """A refused connection or an unknown host never sent the request; a body cut mid-reply
    did. (An unknown host was read as "may have landed", and the command said unknown.)"""
    pool = urllib3.HTTPConnectionPool("127.0.0.1", 9)
    unknown = urllib3.exceptions.NameResolutionError("no-such-host", None, OSError("x"))  # type: ignore[arg-type]
    refused = urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
    for reason in (unknown, refused):
        error = requests.ConnectionError(urllib3.exceptions.MaxRetryError(pool, "/", reason))
        assert write_outcome(error) is None
    assert write_outcome(requests.exceptions.ChunkedEncodingError("cut")) == AMBIGUOUS
    assert write_outcome(requests.ReadTimeout("late")) == AMBIGUOUS


def test_a_definite_failure_after_an_unanswered_attempt_is_unknown() -> None:
    """Attempt 1 goes unanswered (it may still land), attempt 2 is refused outright: the
    outcome is unknown, not "failed" (a move would otherwise drop the event of a move the
    store may yet apply)."""
    calls: list[int] = []

    def send(_nonce: str) -> str:
        calls.append(1)
        raise (TimeoutError("late") if len(calls) == 1 else ConnectionRefusedError("down"))

    def classify(e: Exception) -> str:
        if isinstance(e, ConnectionRefusedError):
            raise StoreUnavailable("cannot reach the store")
        return AMBIGUOUS

    with pytest.raises(OutcomeUnknown, match="earlier attempt"):
        settle(
            "gs://b/k",
            send,
            read_back=lambda: None,
            judge=lambda _stored, _nonce: "absent",
            conflict=lambda: StoreUnavailable("conflict"),
            classify=classify,
        )
    assert len(calls) == 2
