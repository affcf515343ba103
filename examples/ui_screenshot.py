"""The README's picture of `modelswap ui` (docs/ui-model-page.png), taken again by

    .venv/bin/python -m examples.ui_screenshot

A sample registry (modelswap.testing.sample_registry: 30 versions, 80 moves) served by the
real `modelswap ui`, photographed by Debian's headless Chromium, as the browser test does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from modelswap.testing import sample_registry
from modelswap.testing.browser import chrome
from modelswap.testing.ui_process import serving

OUT = Path(__file__).resolve().parents[1] / "docs" / "ui-model-page.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "registry"
        sample_registry.build(root, model="fraud-detector", versions=30, events=80)
        driver = chrome(Path(tmp) / "chromium", 1200, 1000)
        try:
            with serving(root) as url:
                driver.get(url + "/models/fraud-detector")
                driver.save_screenshot(str(OUT))
        finally:
            driver.quit()
    print(f"wrote {OUT} ({OUT.stat().st_size // 1000} KB)")


if __name__ == "__main__":
    main()
