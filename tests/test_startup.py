"""What a command imports before it does anything: start-up is part of every promote's
propagation time and every init container's first model (issue #17)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest


def imported_after(code: str) -> dict[str, object]:
    """Run `code` in a fresh interpreter; it prints a JSON object, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(importlib.util.find_spec("OpenSSL") is None, reason="needs pyOpenSSL")
def test_the_s3_store_does_not_load_pyopenssl_and_leaves_it_importable() -> None:
    """botocore would import pyOpenSSL (~70 ms) only to take urllib3's unpatched SSLContext."""
    seen = imported_after(
        "import json, sys\n"
        "import modelswap.store.s3\n"
        "before = 'OpenSSL' in sys.modules\n"
        "import urllib3.contrib.pyopenssl\n"
        "print(json.dumps({'before': before, 'after': 'OpenSSL' in sys.modules}))\n"
    )
    assert seen == {"before": False, "after": True}


@pytest.mark.skipif(importlib.util.find_spec("OpenSSL") is None, reason="needs pyOpenSSL")
def test_a_process_that_loaded_pyopenssl_first_gets_botocore_as_before() -> None:
    """An app that imported (and maybe injected) pyOpenSSL first: botocore takes the same
    unpatched SSLContext from it as it always did."""
    seen = imported_after(
        "import json\n"
        "import urllib3.contrib.pyopenssl as p\n"
        "p.inject_into_urllib3()\n"
        "import modelswap.store.s3, botocore.httpsession as h\n"
        "print(json.dumps({'same': h.SSLContext is p.orig_util_SSLContext}))\n"
    )
    assert seen == {"same": True}


def test_the_cli_does_not_import_the_ui_server_or_any_store_sdk() -> None:
    """`modelswap promote` pays for what promote uses: the dashboard's server (asyncio,
    aiohttp) and a store's SDK load only in the commands that need them."""
    seen = imported_after(
        "import json, sys\n"
        "import modelswap.cli\n"
        "heavy = ['modelswap.ui', 'asyncio', 'aiohttp', 'boto3', 'google.cloud.storage',\n"
        "         'azure.storage.blob']\n"
        "print(json.dumps({'loaded': [m for m in heavy if m in sys.modules]}))\n"
    )
    assert seen == {"loaded": []}


def test_agent_once_loads_no_http_server_metrics_parser_or_rich() -> None:
    """An init container's `agent --once` loads what it runs: no aiohttp, no Prometheus
    parser (only --metrics-url scrapes), no rich for structlog's tracebacks; each still
    imports afterwards for whoever needs it."""
    seen = imported_after(
        "import importlib, importlib.util, json, sys\n"
        "import modelswap.cli, modelswap.agent.run, modelswap.store.s3\n"
        "heavy = ['aiohttp', 'prometheus_client', 'rich', 'OpenSSL']\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "later = [m for m in heavy if importlib.util.find_spec(m) and importlib.import_module(m)]\n"
        "print(json.dumps({'loaded': loaded, 'later': sorted(later) == sorted(\n"
        "    m for m in heavy if importlib.util.find_spec(m))}))\n"
    )
    assert seen == {"loaded": [], "later": True}
