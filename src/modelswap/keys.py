"""Every object key of the registry, spelled once (PRODUCT.md section 1).

    <model>/<version>/<file>...           a version's files, immutable
    <model>/<version>/metadata.json       written last: the version exists when it does
    <model>/<POINTER>                     plain text naming a version (CURRENT, CANARY, ...)
    <model>/events/<seq>.json             one object per pointer move
    <model>/fleet/<instance>.json         agent reports
    <model>/.locks/<name>.lock            leases: publish-<version>, moves
    <model>/.deleted/<version>.json       tombstones of versions gc deleted
    <model>/ROLLOUT                       the rollout, JSON, moved by compare-and-swap
    <model>/quarantine/<version>.json     versions a rollout rolled back (create-only)
    <model>/.rollout/window.json          the rollout judge's open window (controller only)

Keys are relative to the store's root (s3://bucket/prefix or a folder); the store adds it.
"""

from __future__ import annotations

from modelswap.metadata import METADATA_FILE

EVENTS_DIR = "events"
FLEET_DIR = "fleet"
LOCKS_DIR = ".locks"
TOMBSTONES_DIR = ".deleted"
QUARANTINE_DIR = "quarantine"
JUDGE_DIR = ".rollout"  # dotted: never a version name, never listed as a model's version
ROLLOUT = "ROLLOUT"  # upper case like a pointer, but JSON: never listed or moved as one
# Folder names under a model that are never versions.
RESERVED = frozenset({EVENTS_DIR, FLEET_DIR, QUARANTINE_DIR})
HIDDEN_DIRS = (LOCKS_DIR, TOMBSTONES_DIR, JUDGE_DIR)  # dotted: never a version either
MOVES_LOCK = "moves"  # one lease for every pointer move of a model, and for gc
PUBLISH_LOCK_PREFIX = "publish-"


def model_prefix(model: str) -> str:
    return f"{model}/"


def version_prefix(model: str, version: str) -> str:
    return f"{model}/{version}/"


def version_file(model: str, version: str, name: str) -> str:
    return f"{model}/{version}/{name}"


def metadata(model: str, version: str) -> str:
    return version_file(model, version, METADATA_FILE)


def pointer(model: str, name: str) -> str:
    return f"{model}/{name}"


def events_prefix(model: str) -> str:
    return f"{model}/{EVENTS_DIR}/"


def event(model: str, seq: int) -> str:
    return f"{events_prefix(model)}{seq:010d}.json"


def fleet_prefix(model: str) -> str:
    return f"{model}/{FLEET_DIR}/"


def fleet_report(model: str, instance: str) -> str:
    return f"{fleet_prefix(model)}{instance}.json"


def locks_prefix(model: str) -> str:
    return f"{model}/{LOCKS_DIR}/"


def lock(model: str, name: str) -> str:
    return f"{locks_prefix(model)}{name}.lock"


def publish_lock(model: str, version: str) -> str:
    return lock(model, f"{PUBLISH_LOCK_PREFIX}{version}")


def publish_locks_prefix(model: str) -> str:
    return f"{locks_prefix(model)}{PUBLISH_LOCK_PREFIX}"


def lock_name(key: str) -> str:
    """`publish-v3` for .../.locks/publish-v3.lock."""
    return key.rsplit("/", 1)[-1].removesuffix(".lock")


def moves_lock(model: str) -> str:
    return lock(model, MOVES_LOCK)


def tombstones_prefix(model: str) -> str:
    return f"{model}/{TOMBSTONES_DIR}/"


def tombstone(model: str, version: str) -> str:
    return f"{tombstones_prefix(model)}{version}.json"


def rollout(model: str) -> str:
    return f"{model}/{ROLLOUT}"


def quarantine_prefix(model: str) -> str:
    return f"{model}/{QUARANTINE_DIR}/"


def quarantine(model: str, version: str) -> str:
    return f"{quarantine_prefix(model)}{version}.json"


def name_under(prefix: str, key: str, suffix: str = "") -> str:
    """The part of `key` after `prefix`, without `suffix` (a listing's key back to a name)."""
    return key[len(prefix) :].removesuffix(suffix)


def rollout_window(model: str) -> str:
    return f"{model}/{JUDGE_DIR}/window.json"
