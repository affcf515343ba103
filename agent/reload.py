"""`--reload KIND=URL`: after a swap, ask the model server to load what the link names, and
check that it serves it (PRODUCT.md section 11).

- mlserver: POST /v2/repository/models/<name>/load re-reads the model's folder (MLServer loads
  the new one before it unloads the old, and keeps the old on a failed load); then
  /v2/models/<name>/ready, and the version its metadata names when model-settings.json sets
  one (which it should not: MLServer then loads a new version beside the old one instead of
  in its place, README "Beside any model server").
- triton (--model-control-mode=explicit, with --tfserving-dir: each swap is a new version
  folder, so Triton never has to guess from modification times): POST
  /v2/repository/models/<name>/load, then /v2/models/<name>/versions/<n>/ready.
- torchserve: the version's folder holds one .mar; its manifest names the version. Registered
  (through a link named after the version: TorchServe refuses a second archive of the same
  file name) if TorchServe does not have it, made the default, checked READY, and then the
  versions before it are unregistered.

A refusal, an error status or silence is one line naming the server, what was asked and what
it answered; the caller reports it and asks again at the next pass.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelswap.redact import redact

KINDS = ("mlserver", "triton", "torchserve")
DRAIN_S = 5.0  # torchserve: an old version is unregistered this long after the new default


class ReloadError(Exception):
    """The server did not take the version (or did not say so); the message says what."""


@dataclass(frozen=True)
class Reload:
    kind: str
    url: str  # the server's base URL, no trailing slash
    # torchserve: versions to unregister, and when (after DRAIN_S)
    retiring: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Reload:
        """KIND=URL; ValueError naming --reload and the kinds there are."""
        kind, sep, url = text.partition("=")
        if not sep or kind not in KINDS:
            raise ValueError(
                f"--reload {text!r} is not KIND=URL with KIND one of {', '.join(KINDS)}"
            )
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--reload {kind}= needs an http:// or https:// URL, not {url!r}")
        return cls(kind, url.rstrip("/"))

    def load(self, name: str, version_dir: Path, number: int | None, timeout_s: float) -> str:
        """Have the server serve what version_dir holds; returns what it says it serves."""
        if self.kind == "mlserver":
            return self._mlserver(name, version_dir, timeout_s)
        if self.kind == "triton":
            return self._triton(name, number, timeout_s)
        return self._torchserve(name, version_dir, timeout_s)

    # -- one server each -------------------------------------------------------------------

    def _mlserver(self, name: str, version_dir: Path, timeout_s: float) -> str:
        n = _q(name)
        self._expect("POST", f"/v2/repository/models/{n}/load", timeout_s, "load")
        self._expect("GET", f"/v2/models/{n}/ready", timeout_s, "readiness")
        wanted = _mlserver_version(version_dir)
        if wanted is None:
            return f"mlserver serves {name}"
        _, meta = self._call("GET", f"/v2/models/{n}", timeout_s)
        served = meta.get("versions") if isinstance(meta, dict) else None
        if isinstance(served, list) and served and wanted not in served:
            raise ReloadError(f"mlserver serves {name} versions {served}, not {wanted}")
        return f"mlserver serves {name} version {wanted}"

    def _triton(self, name: str, number: int | None, timeout_s: float) -> str:
        if number is None:
            raise ReloadError("--reload triton= needs --tfserving-dir (numbered versions)")
        n = _q(name)
        self._expect("POST", f"/v2/repository/models/{n}/load", timeout_s, "load")
        self._expect("GET", f"/v2/models/{n}/versions/{number}/ready", timeout_s, "readiness")
        return f"triton serves {name} version {number}"

    def _torchserve(self, name: str, version_dir: Path, timeout_s: float) -> str:
        mar, version = _archive(version_dir)
        link = _named_link(name, version_dir, mar).as_uri()
        n = _q(name)
        # /all: every registered version (without it TorchServe describes the default only)
        status, listed = self._call("GET", f"/models/{n}/all", timeout_s)
        registered = {
            str(m.get("modelVersion")): str(m.get("modelUrl"))
            for m in (listed if status == 200 and isinstance(listed, list) else [])
            if isinstance(m, dict)
        }
        if version in registered and registered[version] != link:
            # The archive's own version names what TorchServe serves: two registry versions
            # with one modelVersion would be told apart by nothing.
            raise ReloadError(
                f"torchserve has {name} {version} from {registered[version]}, not this "
                f"version's archive; give each archive its own --version when archiving"
            )
        v = _q(version)
        if version not in registered:
            query = urllib.parse.urlencode(
                {"url": link, "model_name": name, "initial_workers": 1, "synchronous": "true"}
            )
            status, body = self._call("POST", f"/models?{query}", timeout_s)
            if status != 200:
                # TorchServe keeps a registration whose workers did not start: removed, so
                # the next try starts clean and it is never made the default
                self._call("DELETE", f"/models/{n}/{v}", timeout_s)
                raise ReloadError(
                    f"torchserve refused the registration (POST /models?{query}: HTTP "
                    f"{status}{': ' + _error_of(body) if _error_of(body) else ''})"
                )
        if not self._torchserve_ready(n, v, timeout_s):  # the default only once READY
            raise ReloadError(f"torchserve has {name} {version} with no READY worker")
        self._expect("PUT", f"/models/{n}/{v}/set-default", timeout_s, "set-default")
        # Older versions go once requests already queued on them are answered: TorchServe
        # drops a request in flight on a version unregistered under it (seen: one timed out).
        due = time.monotonic() + DRAIN_S
        self.retiring.update({old: due for old in registered if old != version})
        self.retiring.pop(version, None)
        self._retire(n, timeout_s)
        return f"torchserve serves {name} version {version}"

    def _retire(self, n: str, timeout_s: float) -> None:
        now = time.monotonic()
        for old, due in list(self.retiring.items()):
            if due <= now:
                self._call("DELETE", f"/models/{n}/{_q(old)}", timeout_s)
                del self.retiring[old]

    def _torchserve_ready(self, n: str, v: str, timeout_s: float) -> bool:
        _, described = self._call("GET", f"/models/{n}/{v}", timeout_s)
        return "READY" in [
            w.get("status")
            for m in (described if isinstance(described, list) else [])
            if isinstance(m, dict)
            for w in (m.get("workers") or [])
            if isinstance(w, dict)
        ]

    def serves(self, name: str, version_dir: Path, number: int | None, timeout_s: float) -> bool:
        """One cheap look at whether the server still serves it (a server restarted on its
        own has lost what it was told to load): False sends the agent to load it again."""
        n = _q(name)
        try:
            if self.kind == "mlserver":
                return self._call("GET", f"/v2/models/{n}/ready", timeout_s)[0] == 200
            if self.kind == "triton":
                path = f"/v2/models/{n}/versions/{number}/ready"
                return self._call("GET", path, timeout_s)[0] == 200
            self._retire(n, timeout_s)
            return self._torchserve_ready(n, _q(_archive(version_dir)[1]), timeout_s)
        except ReloadError:
            return False

    # -- HTTP ------------------------------------------------------------------------------

    def _expect(self, method: str, path: str, timeout_s: float, what: str) -> Any:
        status, body = self._call(method, path, timeout_s)
        if status != 200:
            raise ReloadError(
                f"{self.kind} refused the {what} ({method} {path}: HTTP {status}"
                f"{': ' + _error_of(body) if _error_of(body) else ''})"
            )
        return body

    def _call(self, method: str, path: str, timeout_s: float) -> tuple[int, Any]:
        data = b"{}" if method == "POST" and "?" not in path else None
        req = urllib.request.Request(  # noqa: S310 - http(s) checked by parse()
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310
                return r.status, _json(r.read(1 << 20))
        except urllib.error.HTTPError as e:
            try:
                return e.code, _json(e.read(1 << 20))
            except (OSError, http.client.HTTPException):
                return e.code, ""
        except (OSError, ValueError, http.client.HTTPException) as e:
            # HTTPException: not HTTP at all (a gRPC port), a cut-off body
            raise ReloadError(redact(f"{self.kind} at {self.url} did not answer: {e}")) from e


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:200]


def _error_of(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if isinstance(body.get(key), str):
                return redact(str(body[key]))[:300]
    return redact(body)[:300] if isinstance(body, str) else ""


def _mlserver_version(version_dir: Path) -> str | None:
    """The version model-settings.json sets (parameters.version), if any."""
    try:
        settings = json.loads((version_dir / "model-settings.json").read_text())
    except (OSError, ValueError):
        return None
    params = settings.get("parameters") if isinstance(settings, dict) else None
    version = params.get("version") if isinstance(params, dict) else None
    return version if isinstance(version, str) else None


def _named_link(name: str, version_dir: Path, mar: Path) -> Path:
    """<dest>/<model>/.torchserve/<name>-<version>.mar -> the version's archive. TorchServe
    copies an archive into its model store under the URL's file name and refuses a name it
    has ("Model file already exists"): every version's archive needs a name of its own, and
    the version's folder is immutable. Links whose version was pruned are removed."""
    folder = version_dir.parent.parent / ".torchserve"
    link = folder / f"{name}-{version_dir.name}.mar"
    try:
        folder.mkdir(exist_ok=True)
        if not link.is_symlink():
            tmp = folder / f".{link.name}.tmp-{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(os.path.relpath(mar, folder))
            os.replace(tmp, link)
        for other in folder.iterdir():
            if other != link and other.is_symlink() and not other.exists():
                other.unlink()
    except OSError as e:
        raise ReloadError(f"cannot link {link} for torchserve: {e}") from e
    return link.absolute()


def _archive(version_dir: Path) -> tuple[Path, str]:
    """The version's one .mar and the model version its manifest names."""
    mars = sorted(version_dir.glob("*.mar"))
    if len(mars) != 1:
        raise ReloadError(
            f"--reload torchserve needs one .mar in the version, found {len(mars)} in {version_dir}"
        )
    try:
        with zipfile.ZipFile(mars[0]) as z:
            manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
        version = manifest["model"]["modelVersion"]
    except Exception as e:
        raise ReloadError(f"{mars[0].name} has no readable MAR-INF/MANIFEST.json: {e}") from e
    return mars[0], str(version)
