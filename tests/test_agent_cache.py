"""A cached copy is linked again only while it is the registry's version of that name."""

from __future__ import annotations

from pathlib import Path

from modelswap import keys
from modelswap.registry import Registry
from modelswap.testing.agents import AgentProc
from tests.conftest import wait_until
from tests.test_agent import FAST, MakeFile, promote, publish


def test_a_name_republished_with_other_bytes_is_downloaded_not_served_from_cache(
    registry_url: str, registry: Registry, model_file: MakeFile, tmp_path: Path
) -> None:
    """v1 cached, then deleted and republished with other bytes behind gc's back: promoting v1
    again downloads the new bytes instead of linking the stale cached copy."""
    publish(registry, model_file, b"old" * 10_000, "v1")
    publish(registry, model_file, b"two" * 10_000, "v2")
    promote(registry, "v1")
    dest = tmp_path / "dest"
    agent = AgentProc(registry_url, "clf", dest, *FAST).wait_started()
    try:
        wait_until(lambda: agent.status()["active_version"] == "v1", timeout=20)
        promote(registry, "v2")
        wait_until(lambda: agent.status()["active_version"] == "v2", timeout=20)
        assert "v1" in agent.status()["local_versions"]
        # What a tool that bypasses modelswap could do: delete v1 and its tombstone, then
        # publish other bytes under the same name.
        registry.delete_version("clf", "v1")
        registry.store.delete(keys.tombstone("clf", "v1"))
        publish(registry, model_file, b"new" * 10_000, "v1")
        before = agent.metric("download_bytes_total")
        promote(registry, "v1")
        wait_until(lambda: agent.status()["active_version"] == "v1", timeout=20)
        assert (dest / "clf" / "current" / "model.onnx").read_bytes() == b"new" * 10_000
        assert agent.metric("download_bytes_total") - before == 30_000
    finally:
        assert agent.stop() == 0
