"""One contract for the storage seam, run against all four backends: the local folder, a real
SeaweedFS (S3), fake-gcs-server (GCS) and Azurite (Azure Blob)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from modelswap.errors import ObjectExists, ObjectNotFound, PreconditionFailed
from modelswap.store import Store, open_store
from tests.conftest import backend_url

# What fake-gcs-server 1.54 (the bundled binary) does not enforce; real GCS does. Skipped there
# with the reason, never passed silently.
GCS_EMULATOR_GAPS = {
    "delete": "fake-gcs-server ignores ifGenerationMatch on DELETE",
    "resumable": "fake-gcs-server 1.54 ignores ifGenerationMatch on resumable uploads (> 8 MiB)",
}


@pytest.fixture(params=["local", "s3", "gcs", "azure"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return open_store(backend_url(request, request.param, tmp_path))


def skip_on_gcs_emulator(store: Store, gap: str) -> None:
    if store.url.startswith("gs://"):
        pytest.skip(GCS_EMULATOR_GAPS[gap])


def test_put_then_get_returns_bytes_and_etag(store: Store) -> None:
    """A written object reads back byte for byte with the ETag the write returned."""
    etag = store.put("m/CURRENT", b"v1\n")
    blob = store.read("m/CURRENT")
    assert (blob.data, blob.etag, blob.size) == (b"v1\n", etag, 3)


def test_missing_key_raises_not_found(store: Store) -> None:
    """Reading, heading or streaming a missing key raises ObjectNotFound."""
    with pytest.raises(ObjectNotFound):
        store.read("nope/CURRENT")
    with pytest.raises(ObjectNotFound):
        store.head("nope/CURRENT")
    with pytest.raises(ObjectNotFound):
        list(store.iter_chunks("nope/file"))


def test_conditional_get_with_same_etag_is_not_modified(store: Store) -> None:
    """A get with the current ETag answers None (a 304 on S3); after a write it answers data."""
    etag = store.put("m/CURRENT", b"v1\n")
    assert store.get("m/CURRENT", if_none_match=etag) is None
    store.put("m/CURRENT", b"v2\n")
    blob = store.get("m/CURRENT", if_none_match=etag)
    assert blob is not None
    assert blob.data == b"v2\n"


def test_max_bytes_skips_large_bodies(store: Store) -> None:
    """A read capped by max_bytes reports the real size of a larger object without its data."""
    store.put("m/CURRENT", b"x" * 5000)
    blob = store.read("m/CURRENT", max_bytes=100)
    assert (blob.data, blob.size, blob.truncated) == (b"", 5000, True)


def test_put_new_refuses_an_existing_key(store: Store) -> None:
    """Create-only writes fail on a taken key and leave the first content in place."""
    store.put_new("m/v1/metadata.json", b"first")
    with pytest.raises(ObjectExists):
        store.put_new("m/v1/metadata.json", b"second")
    assert store.read("m/v1/metadata.json").data == b"first"


def test_put_if_match_swaps_only_from_the_expected_etag(store: Store) -> None:
    """Compare-and-swap succeeds against the current ETag and fails against a stale one."""
    first = store.put("m/CURRENT", b"v1\n")
    second = store.put_if_match("m/CURRENT", b"v2\n", first)
    with pytest.raises(PreconditionFailed):
        store.put_if_match("m/CURRENT", b"v3\n", first)
    assert store.read("m/CURRENT").data == b"v2\n"
    assert store.read("m/CURRENT").etag == second


def test_put_if_match_on_a_missing_key_fails(store: Store) -> None:
    """Compare-and-swap against a deleted object fails instead of recreating it."""
    etag = store.put("m/CURRENT", b"v1\n")
    store.delete("m/CURRENT")
    with pytest.raises(PreconditionFailed):
        store.put_if_match("m/CURRENT", b"v2\n", etag)


def winners_of_eight(attempt: Callable[[int], None], loses: type[Exception]) -> int:
    """Run attempt(0..7) on 8 threads at once; how many did not raise `loses`."""

    def one(i: int) -> bool:
        try:
            attempt(i)
        except loses:
            return False
        return True

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return sum(pool.map(one, range(8)))


def test_concurrent_create_only_writes_have_one_winner(store: Store) -> None:
    """Eight simultaneous create-only writes of one key: exactly one succeeds."""

    def write(i: int) -> None:
        store.put_new("m/v9/metadata.json", f"writer {i}".encode())

    assert winners_of_eight(write, ObjectExists) == 1


def test_concurrent_compare_and_swap_has_one_winner(store: Store) -> None:
    """Eight simultaneous swaps from the same ETag: exactly one succeeds."""
    etag = store.put("m/CURRENT", b"v1\n")

    def swap(i: int) -> None:
        store.put_if_match("m/CURRENT", f"v{i + 2}\n".encode(), etag)

    assert winners_of_eight(swap, PreconditionFailed) == 1


def test_conditional_delete_needs_the_current_etag(store: Store) -> None:
    """A delete with a stale ETag fails and keeps the object; with the right one it deletes."""
    skip_on_gcs_emulator(store, "delete")
    first = store.put("m/.locks/CURRENT.lock", b"a")
    second = store.put("m/.locks/CURRENT.lock", b"b")
    with pytest.raises(PreconditionFailed):
        store.delete("m/.locks/CURRENT.lock", if_match=first)
    store.delete("m/.locks/CURRENT.lock", if_match=second)
    with pytest.raises(ObjectNotFound):
        store.head("m/.locks/CURRENT.lock")


def test_delete_of_a_missing_key_is_not_an_error(store: Store) -> None:
    """Deleting what is not there succeeds quietly (deletes are retried after crashes)."""
    store.delete("m/never-written")


def test_objects_lists_by_prefix_in_key_order(store: Store) -> None:
    """objects() returns every key under the prefix, sorted, with sizes, and nothing else."""
    for key in ("m/v2/a", "m/v1/b", "m/v1/a", "other/v1/a", "m2/v1/a"):
        store.put(key, key.encode())
    keys = [(o.key, o.size) for o in store.objects("m/")]
    assert keys == [("m/v1/a", 6), ("m/v1/b", 6), ("m/v2/a", 6)]


def test_list_dirs_names_immediate_children(store: Store) -> None:
    """list_dirs() gives the folder names one level down, not files or deeper folders."""
    for key in ("m/v1/a", "m/v1/sub/b", "m/v2/a", "m/CURRENT"):
        store.put(key, b"x")
    assert store.list_dirs("m/") == ["v1", "v2"]
    assert store.list_dirs("absent/") == []


def test_large_upload_streams_and_reads_back(store: Store) -> None:
    """A 40 MB upload (multipart on S3) hashes while streaming and reads back identically."""
    data = os.urandom(1 << 20) * 40
    seen = hashlib.sha256()
    info = store.upload("m/v1/model.onnx", io.BytesIO(data), create_only=True, on_chunk=seen.update)
    assert info.size == len(data)
    assert seen.hexdigest() == hashlib.sha256(data).hexdigest()
    back = hashlib.sha256()
    for chunk in store.iter_chunks("m/v1/model.onnx"):
        back.update(chunk)
    assert back.hexdigest() == seen.hexdigest()


def test_create_only_upload_refuses_a_taken_key(store: Store) -> None:
    """A create-only streaming upload onto an existing key fails and keeps the original."""
    skip_on_gcs_emulator(store, "resumable")
    store.upload("m/v1/model.onnx", io.BytesIO(b"a" * 100), create_only=True)
    with pytest.raises(ObjectExists):
        store.upload("m/v1/model.onnx", io.BytesIO(b"b" * (20 << 20)), create_only=True)
    assert next(store.iter_chunks("m/v1/model.onnx")) == b"a" * 100


def test_create_only_small_upload_refuses_a_taken_key(store: Store) -> None:
    """The upload path every create-only registry object takes (one request) refuses a taken
    key on every backend, the GCS emulator included."""
    store.upload("m/v1/metadata.json", io.BytesIO(b"a" * 100), create_only=True)
    with pytest.raises(ObjectExists):
        store.upload("m/v1/metadata.json", io.BytesIO(b"b" * 200), create_only=True)
    assert store.read("m/v1/metadata.json").data == b"a" * 100
