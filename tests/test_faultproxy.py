"""The fault proxy between boto3 and a real SeaweedFS: each fault does on the wire what it says."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from modelswap.testing import seaweed
from modelswap.testing.faultproxy import Fault, FaultProxy
from tests.conftest import BUCKET, wait_until

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.timeout(30)


def _client(endpoint: str) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=seaweed.ACCESS_KEY,
        aws_secret_access_key=seaweed.SECRET_KEY,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=2),
    )


@pytest.fixture
def proxy(s3_server: seaweed.Seaweed) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as p:
        yield p


@pytest.fixture
def via(proxy: FaultProxy) -> S3Client:
    """A client whose every request goes through the proxy."""
    return _client(proxy.endpoint)


@pytest.fixture
def direct(s3_server: seaweed.Seaweed) -> S3Client:
    """A client straight to SeaweedFS: what the store really holds."""
    return _client(s3_server.endpoint)


@pytest.fixture
def key() -> str:
    return f"faultproxy/{uuid.uuid4().hex[:12]}/obj"


def _exists(client: S3Client, key: str) -> bool:
    try:
        client.head_object(Bucket=BUCKET, Key=key)
    except ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise
    return True


def _address(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.removeprefix("http://").split(":")
    return host, int(port)


def _status(e: ClientError) -> int:
    return e.response["ResponseMetadata"]["HTTPStatusCode"]


def test_unmatched_request_passes_through(proxy: FaultProxy, via: S3Client, key: str) -> None:
    """With no fault in range, a put then a get through the proxy return the bytes written."""
    proxy.add(Fault("503_before", method="DELETE"))
    via.put_object(Bucket=BUCKET, Key=key, Body=b"hello")
    assert via.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"hello"
    assert [(r.method, r.status, r.action) for r in proxy.requests] == [
        ("PUT", 200, None),
        ("GET", 200, None),
    ]


def test_drop_reply_applies_the_write_but_the_client_fails(
    proxy: FaultProxy, via: S3Client, direct: S3Client, key: str
) -> None:
    """drop_reply on a PUT: the client raises, yet SeaweedFS holds the object."""
    fault = proxy.add(Fault("drop_reply", method="PUT", path=re.escape(key)))
    with pytest.raises(ConnectionClosedError):
        via.put_object(Bucket=BUCKET, Key=key, Body=b"landed")
    assert direct.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"landed"
    assert proxy.fired(fault) == 1


def test_reset_request_never_lands_the_write(
    proxy: FaultProxy, via: S3Client, direct: S3Client, key: str
) -> None:
    """reset_request on a 64 KB PUT: the client raises and the object does not exist."""
    proxy.add(Fault("reset_request", method="PUT", path=re.escape(key)))
    with pytest.raises(ConnectionClosedError):
        via.put_object(Bucket=BUCKET, Key=key, Body=b"x" * 65536)
    assert not _exists(direct, key)


def test_503_after_answers_503_but_the_write_landed(
    proxy: FaultProxy, via: S3Client, direct: S3Client, key: str
) -> None:
    """503_after on a PUT: the client gets a 503 ServiceUnavailable and the object exists."""
    proxy.add(Fault("503_after", method="PUT", path=re.escape(key)))
    with pytest.raises(ClientError) as info:
        via.put_object(Bucket=BUCKET, Key=key, Body=b"landed")
    assert (_status(info.value), info.value.response["Error"]["Code"]) == (
        503,
        "ServiceUnavailable",
    )
    assert direct.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"landed"


def test_503_before_answers_503_and_the_write_never_lands(
    proxy: FaultProxy, via: S3Client, direct: S3Client, key: str
) -> None:
    """503_before on a PUT: the client gets a 503 and the object does not exist."""
    proxy.add(Fault("503_before", method="PUT", path=re.escape(key)))
    with pytest.raises(ClientError) as info:
        via.put_object(Bucket=BUCKET, Key=key, Body=b"never")
    assert _status(info.value) == 503
    assert not _exists(direct, key)
    assert [(r.status, r.action) for r in proxy.requests] == [(503, "503_before")]


def test_header_fault_hits_only_requests_carrying_that_header(
    proxy: FaultProxy, via: S3Client, direct: S3Client, key: str
) -> None:
    """A fault on If-None-Match leaves a plain PUT alone and hits the conditional one."""
    fault = proxy.add(Fault("503_before", method="PUT", header="if-none-match", times=0))
    via.put_object(Bucket=BUCKET, Key=key, Body=b"plain")
    with pytest.raises(ClientError) as info:
        via.put_object(Bucket=BUCKET, Key=key, Body=b"conditional", IfNoneMatch="*")
    assert (_status(info.value), proxy.fired(fault)) == (503, 1)
    assert direct.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"plain"


def test_reset_response_breaks_the_body_read(
    proxy: FaultProxy, via: S3Client, direct: S3Client, key: str
) -> None:
    """reset_response on a GET of 64 KB: the client cannot read the whole body."""
    direct.put_object(Bucket=BUCKET, Key=key, Body=b"y" * 65536)
    proxy.add(Fault("reset_response", method="GET", path=re.escape(key)))
    body = via.get_object(Bucket=BUCKET, Key=key)["Body"]  # the head arrives before the RST
    with pytest.raises(ResponseStreamingError):
        body.read()
    assert [(r.status, r.action) for r in proxy.requests] == [(200, "reset_response")]


def test_stall_makes_the_client_time_out(proxy: FaultProxy, via: S3Client, key: str) -> None:
    """A GET to a stalled endpoint raises a read timeout after about read_timeout (2 s)."""
    proxy.add(Fault("stall", method="GET", path=re.escape(key)))
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        via.get_object(Bucket=BUCKET, Key=key)
    assert 1.5 <= time.monotonic() - started < 4


def test_stall_body_sends_a_quarter_then_nothing(
    proxy: FaultProxy, via: S3Client, direct: S3Client, key: str
) -> None:
    """stall_body on a GET: the headers arrive, then the body read times out."""
    direct.put_object(Bucket=BUCKET, Key=key, Body=b"z" * 8192)
    proxy.add(Fault("stall_body", method="GET", path=re.escape(key)))
    body = via.get_object(Bucket=BUCKET, Key=key)["Body"]
    assert body.read(2048) == b"z" * 2048
    with pytest.raises(ReadTimeoutError):
        body.read()


def test_trickle_sends_the_right_bytes_slowly(
    proxy: FaultProxy, via: S3Client, direct: S3Client, key: str
) -> None:
    """trickle at 4096 B/s of an 8 KB object takes at least 1.5 s and returns the bytes."""
    data = bytes(range(256)) * 32
    direct.put_object(Bucket=BUCKET, Key=key, Body=data)
    proxy.add(Fault("trickle", method="GET", path=re.escape(key), rate=4096))
    started = time.monotonic()
    assert via.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    assert time.monotonic() - started >= 1.5


def test_nth_fault_spares_the_first_match_and_hits_the_second(
    proxy: FaultProxy, via: S3Client, direct: S3Client, key: str
) -> None:
    """nth=2, times=1: the first and third GETs pass, the second gets the 503."""
    direct.put_object(Bucket=BUCKET, Key=key, Body=b"v")
    fault = proxy.add(Fault("503_before", method="GET", path=re.escape(key), nth=2))
    via.get_object(Bucket=BUCKET, Key=key)
    with pytest.raises(ClientError):
        via.get_object(Bucket=BUCKET, Key=key)
    via.get_object(Bucket=BUCKET, Key=key)
    assert (proxy.count("GET", re.escape(key)), proxy.count("PUT"), proxy.fired(fault)) == (
        3,
        0,
        1,
    )
    assert [r.status for r in proxy.requests] == [200, 503, 200]


def test_large_put_with_expect_continue_passes_intact(
    proxy: FaultProxy, via: S3Client, direct: S3Client, key: str
) -> None:
    """A 6 MB PUT (boto3 sends Expect: 100-continue) lands byte for byte through the proxy."""
    data = uuid.uuid4().bytes * (6 * 1024 * 1024 // 16)
    via.put_object(Bucket=BUCKET, Key=key, Body=data)
    assert direct.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    assert [(r.method, r.status) for r in proxy.requests] == [("PUT", 200)]


def test_chunked_request_is_forwarded_raw_with_trailers() -> None:
    """A chunked body reaches upstream byte for byte, trailers included, Expect stripped."""
    received: list[bytes] = []
    upstream = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = upstream.accept()
        with conn:
            data = b""
            while not data.endswith(b"0\r\nX-Sum: 1\r\n\r\n") and (chunk := conn.recv(4096)):
                data += chunk
            received.append(data)
            conn.sendall(
                b"HTTP/1.1 201 Created\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
            )

    threading.Thread(target=answer, daemon=True).start()
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n"
    head = b"PUT /b/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
    with (
        FaultProxy(f"http://127.0.0.1:{upstream.getsockname()[1]}") as proxy,
        socket.create_connection(_address(proxy.endpoint)) as client,
    ):
        client.sendall(head + b"Connection: keep-alive\r\n\r\n")
        assert client.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sendall(body)
        reply = b""
        while chunk := client.recv(4096):
            reply += chunk
    upstream.close()
    assert received == [
        b"PUT /b/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + body
    ]
    assert reply == b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def test_clients_that_vanish_mid_request_leave_the_proxy_serving(
    proxy: FaultProxy, via: S3Client, key: str
) -> None:
    """Clients that close mid-head or mid-body end only their own connection."""
    for partial in (b"PUT /x HTTP/1.1\r\nHo", b"PUT /x HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc"):
        with socket.create_connection(_address(proxy.endpoint)) as client:
            client.sendall(partial)
    via.put_object(Bucket=BUCKET, Key=key, Body=b"still here")
    assert via.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"still here"


def test_stop_ends_promptly_with_a_stalled_connection_open(s3_server: seaweed.Seaweed) -> None:
    """stop() closes a stalled connection and returns within a second, its threads ended."""
    proxy = FaultProxy(s3_server.endpoint).start()
    proxy.add(Fault("stall"))
    with socket.create_connection(_address(proxy.endpoint)) as client:
        client.sendall(b"GET /modelswap-tests/x HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: proxy.count() == 1, timeout=5)
        before = threading.active_count()
        started = time.monotonic()
        proxy.stop()
        assert time.monotonic() - started < 1
        client.settimeout(2)
        assert client.recv(1) == b""  # the proxy closed its end
    assert threading.active_count() <= before - 2  # the accept and connection threads ended
