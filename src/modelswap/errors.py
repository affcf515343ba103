"""Every error modelswap raises, each with a hint for the operator.

ModelswapError                 .hint says what to do next; the CLI prints error: and hint:
├── UsageError                 a flag or argument is wrong (exit 2)
├── InvalidName                a model, version, pointer or file name breaks the rules
├── StoreError                 the storage seam (raised by every backend alike)
│   ├── StoreUnavailable       cannot reach or use the store (network, credentials, bucket)
│   │   └── OutcomeUnknown     a write whose reply was lost, and reading back could not tell
│   ├── ObjectNotFound         no object at that key
│   ├── ObjectExists           a create-only write found the key taken
│   └── PreconditionFailed     a compare-and-swap lost (the ETag moved)
└── RegistryError              the registry's rules
    ├── RegistryURLInvalid     --registry is not s3://bucket/prefix, file:///path or a path
    ├── ModelNotFound
    ├── VersionNotFound        also a version whose metadata.json is missing (incomplete)
    ├── VersionExists          versions are immutable; publishing one twice is refused
    ├── PointerNotFound
    ├── InvalidPointer         pointer content that is not one version name
    ├── InvalidMetadata        metadata.json that is not valid JSON or breaks the schema
    ├── IntegrityError         stored bytes do not match metadata.json
    ├── GateRefused            a gated promote's candidate is worse; nothing moved
    ├── Busy                   another operator holds the lock (publish or pointer move)
    │   └── LeaseLost          our own lock lapsed or was taken over; we stopped
    └── PointerMoved           the pointer moved under you; nothing was overwritten
LocalIOError                   the agent's --dest volume: full, read-only, a path in the way
Cancelled                      the agent is stopping

`transient` (StoreUnavailable, Busy, IntegrityError, LocalIOError) tells the agent's loop to
back off; any other error is retried at the normal poll interval.
"""

from __future__ import annotations

from typing import Any


class ModelswapError(Exception):
    """Base of every expected failure; the message is one line, the hint says how to fix it."""

    default_hint = "see `modelswap --help`"
    exit_code = 1
    # True: the same call may succeed later with nobody changing anything (the store is
    # down, the disk is full): back off. False: someone must change the registry or the
    # input first; the agent looks again at its normal interval, polls being cheap.
    transient = False

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint if hint is not None else self.default_hint


class UsageError(ModelswapError):
    default_hint = "see `modelswap COMMAND --help` for the flags"
    exit_code = 2


class InvalidName(ModelswapError):
    default_hint = "names match [A-Za-z0-9][A-Za-z0-9._-]{0,127}"


class StoreError(ModelswapError):
    default_hint = "check the registry URL and that the store is reachable"


class StoreUnavailable(StoreError):
    transient = True

    default_hint = (
        "check --registry / MODELSWAP_REGISTRY, AWS_ENDPOINT_URL and credentials, then retry"
    )


class OutcomeUnknown(StoreUnavailable):
    default_hint = (
        "the store did not answer whether the write landed; check with `modelswap versions` "
        "or `modelswap history`, then retry"
    )


class ObjectNotFound(StoreError):
    default_hint = "check the model and version names with `modelswap versions MODEL`"


class ObjectExists(StoreError):
    default_hint = "objects under a version are immutable; choose a new version name"


class PreconditionFailed(StoreError):
    default_hint = "someone else changed it first; re-read and retry"


class RegistryError(ModelswapError):
    default_hint = "see `modelswap --help`"


class RegistryURLInvalid(RegistryError):
    default_hint = "use s3://bucket/prefix, file:///absolute/path or a local folder path"


class ModelNotFound(RegistryError):
    default_hint = "publish a first version with `modelswap publish MODEL FILE...`"


class VersionNotFound(RegistryError):
    default_hint = "list the versions with `modelswap versions MODEL`"


class VersionExists(RegistryError):
    default_hint = (
        "versions are immutable: publish under a new --version, or omit it for the next vN"
    )


class PointerNotFound(RegistryError):
    default_hint = "promote a version first with `modelswap promote MODEL VERSION`"


class InvalidPointer(RegistryError):
    default_hint = "a pointer holds one version name, e.g. `echo v2 | aws s3 cp - s3://.../CURRENT`"


class InvalidMetadata(RegistryError):
    default_hint = "metadata.json is written by `modelswap publish`; re-publish under a new version"


class IntegrityError(RegistryError):
    transient = True  # not by nature, but every retry is a full download: back off

    default_hint = "the stored bytes changed after publish; re-publish under a new version"


class SignatureError(RegistryError):
    """A version that trusted keys did not sign (or signed under another name): never linked.
    Not transient: someone must publish a signed version or fix the trust keys; the agent
    looks again at its normal interval (two small reads, nothing downloaded)."""

    default_hint = "publish the version with --sign-key, or check the --trust-key files"


class Busy(RegistryError):
    transient = True

    default_hint = "wait for the other command to finish, then retry"


class LeaseLost(Busy):
    default_hint = "retry the command; check the store's health if it happens again"


class GateRefused(RegistryError):
    """A gated promote whose candidate is worse: nothing moved. Carries the gate's result."""

    default_hint = "improve the candidate, or override with force and a reason (recorded)"

    def __init__(self, result: Any, model: str, pointer: str, against: str | None) -> None:
        self.not_moved = f"{model}/{pointer} not moved; it still names {against or 'nothing'}"
        super().__init__(f"gate refused {model}/{result.candidate}: {result.verdict}")
        self.result = result


class PointerMoved(RegistryError):
    default_hint = "check `modelswap history MODEL`, then retry against the new value"


class LocalIOError(ModelswapError):
    transient = True

    default_hint = "check free space and permissions on the --dest volume"


class Cancelled(ModelswapError):
    default_hint = "the agent is stopping; the next start resumes from a clean state"
