"""Stand-ins for Triton's and TorchServe's HTTP APIs where the real servers do not install here
(no CPU build of Triton on PyPI; TorchServe needs Java and a model archive toolchain). Each
records every request and answers as the real one's documented API does, reading the real
files the agent put on disk: Triton "loads" the highest version folder of its repository,
TorchServe reads the version out of the .mar's manifest. `refuse` makes the next loads fail
as the real servers report it (HTTP 400 / 500 with an error body)."""

from __future__ import annotations

import json
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Recorder:
    kind: str
    repository: Path | None = None  # triton: the --tfserving-dir it reads
    calls: list[tuple[str, str]] = field(default_factory=list)
    refuse: str | None = None  # the error the next loads answer with
    loaded: dict[str, int] = field(default_factory=dict)  # triton: model -> version served
    versions: dict[str, dict[str, str]] = field(default_factory=dict)  # torchserve: -> url
    default: dict[str, str] = field(default_factory=dict)
    no_workers: set[str] = field(default_factory=set)  # torchserve: failed registrations
    url: str = ""

    def answer(self, method: str, path: str) -> tuple[int, Any]:
        self.calls.append((method, path))
        parts = urllib.parse.urlsplit(path)
        segs = [urllib.parse.unquote(s) for s in parts.path.strip("/").split("/")]
        if self.kind == "triton":
            return self._triton(method, segs)
        return self._torchserve(method, segs, urllib.parse.parse_qs(parts.query))

    def _triton(self, method: str, s: list[str]) -> tuple[int, Any]:
        if method == "POST" and s[:3] == ["v2", "repository", "models"] and s[4:] == ["load"]:
            if self.refuse:
                return 400, {"error": self.refuse}
            assert self.repository is not None
            numbers = [int(n.name) for n in (self.repository / s[3]).iterdir() if n.name.isdigit()]
            if not numbers:
                return 400, {"error": f"failed to load '{s[3]}', no version is available"}
            self.loaded[s[3]] = max(numbers)  # version_policy latest 1, the default
            return 200, ""
        if method == "GET" and s[:2] == ["v2", "models"] and s[3:4] == ["versions"]:
            ok = self.loaded.get(s[2]) == int(s[4]) and s[5:] == ["ready"]
            return (200, "") if ok else (400, {"error": f"{s[2]} version {s[4]} not ready"})
        return 404, {"error": "not found"}

    def _torchserve(self, method: str, s: list[str], q: dict[str, list[str]]) -> tuple[int, Any]:
        if method == "POST" and s == ["models"]:
            mar = Path(urllib.parse.urlsplit(q["url"][0]).path)
            with zipfile.ZipFile(mar) as z:
                version = json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"]
            name = q["model_name"][0]
            if version in self.versions.get(name, {}):
                return 409, {"code": 409, "message": f"Model version {version} already exists"}
            self.versions.setdefault(name, {})[version] = q["url"][0]
            if self.refuse:  # as TorchServe: the registration stays, with no worker
                self.no_workers.add(version)
                return 500, {"code": 500, "type": "ModelException", "message": self.refuse}
            self.default.setdefault(name, version)
            return 200, {"status": f'Model "{name}" Version: {version} registered'}
        if len(s) >= 2 and s[0] == "models":
            name, known = s[1], self.versions.get(s[1], {})
            if method == "GET" and len(s) in (2, 3) and (len(s) == 2 or s[2] == "all"):
                if not known:
                    return 404, {"code": 404, "message": f"Model not found: {name}"}
                # as TorchServe: /models/<name> describes the default, /all every version
                shown = known if len(s) == 3 else [self.default[name]]
                return 200, [
                    {"modelName": name, "modelVersion": v, "modelUrl": known[v]} for v in shown
                ]
            if method == "PUT" and s[3:] == ["set-default"] and s[2] in known:
                self.default[name] = s[2]
                return 200, {"status": f"Default version succsesfully updated for model {name}"}
            if method == "GET" and len(s) == 3 and s[2] in known:
                workers = [] if s[2] in self.no_workers else [{"id": "9000", "status": "READY"}]
                return 200, [{"modelName": name, "modelVersion": s[2], "workers": workers}]
            if method == "DELETE" and len(s) == 3 and s[2] in known:
                del known[s[2]]
                return 200, {"status": f'Model "{name}" unregistered'}
        return 404, {"code": 404, "message": "not found"}


@contextmanager
def recording(kind: str, repository: Path | None = None) -> Iterator[Recorder]:
    rec = Recorder(kind, repository)

    class Handler(BaseHTTPRequestHandler):
        def _go(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, body = rec.answer(self.command, self.path)
            data = json.dumps(body).encode() if body != "" else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _go

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
