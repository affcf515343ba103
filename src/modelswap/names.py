"""The naming rules of PRODUCT.md section 1, applied wherever a name comes from."""

from __future__ import annotations

import re

from modelswap.errors import InvalidName, InvalidPointer

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
POINTER_RE = re.compile(r"[A-Z][A-Z0-9_-]{0,63}")
NOT_POINTERS = frozenset({"ROLLOUT"})  # upper-case objects that are not pointers (keys.ROLLOUT)
VERSION_NUMBER_RE = re.compile(r"v([0-9]{1,9})")

# A pointer holds one name of at most 128 characters; anything longer is not a pointer.
POINTER_MAX_BYTES = 256
NAME_MAX_BYTES = 255  # one path part, as NAME_MAX on Linux filesystems


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def check_name(value: str, what: str) -> str:
    """Return value if it is a valid model or version name, else raise InvalidName."""
    if not NAME_RE.fullmatch(value):
        raise InvalidName(
            f"invalid {what} name {_shown(value)}",
            hint=f"{what} names match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}, e.g. classifier or v2",
        )
    return value


def check_model(value: str) -> str:
    return check_name(value, "model")


def check_version(value: str) -> str:
    return check_name(value, "version")


def check_pointer_name(value: str) -> str:
    if not POINTER_RE.fullmatch(value):
        raise InvalidName(
            f"invalid pointer name {_shown(value)}",
            hint="pointer names are upper case, e.g. CURRENT or CANARY ([A-Z][A-Z0-9_-]{0,63})",
        )
    if value in NOT_POINTERS:
        raise InvalidName(
            f"{value} is the model's rollout record, not a pointer",
            hint="use `modelswap rollout ...` for it; pointers are e.g. CURRENT or CANARY",
        )
    return value


def check_file_path(value: str) -> str:
    """A file inside a version: a relative POSIX path with no '..', '.', empty or absolute part."""
    parts = value.split("/")
    bad = (
        not value
        or "\\" in value
        or "\x00" in value
        or value.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or len(value) > 1024
    )
    if bad:
        raise InvalidName(
            f"unsafe file path {_shown(value)} in a version",
            hint="file paths inside a version are relative, without '..', '.', '//' or backslashes",
        )
    long = [p for p in parts if len(p.encode()) > NAME_MAX_BYTES]
    if long:
        raise InvalidName(
            f"file path {_shown(value)} has a part of {len(long[0].encode())} bytes",
            hint=f"each part of a path must be at most {NAME_MAX_BYTES} bytes, the limit of "
            "common filesystems (ext4, xfs, tmpfs)",
        )
    return value


def path_collision(paths: list[str]) -> tuple[str, str] | None:
    """Two paths of one version that cannot both be files (`a` and `a/b`), or None."""
    names = set(paths)
    for path in sorted(names):
        parts = path.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder in names:
                return folder, path
    return None


def parse_pointer(raw: bytes, where: str) -> str:
    """Read pointer content ("v2\\n") into a version name, refusing anything else."""
    if len(raw) > POINTER_MAX_BYTES:
        raise InvalidPointer(
            f"pointer {where} is {len(raw)} bytes; a pointer holds one version name"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidPointer(f"pointer {where} is not UTF-8 text") from e
    value = text.strip()
    if not value:
        raise InvalidPointer(f"pointer {where} is empty")
    if not NAME_RE.fullmatch(value):
        raise InvalidPointer(f"pointer {where} holds {_shown(value)}, which is not a version name")
    return value


def version_number(version: str) -> int | None:
    """The N of a vN version name, else None."""
    m = VERSION_NUMBER_RE.fullmatch(version)
    return int(m.group(1)) if m else None
