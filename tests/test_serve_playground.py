"""The playground page end to end in headless Chromium: write a manifesto, compile it, compare answers side by side."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not installed (.ci/run installs them with apt)"
)

SAGE = """---
name: sage
---
# Voice
- Answer in one calm sentence.
"""
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture()
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_compile_then_compare(browser, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from credo.base import tiny_base
    from credo.server.app import ServeSettings, create_app
    from credo.server.engines.torch import TorchServeEngine
    from credo.server.live import LiveServer

    base = tiny_base(0, sliding_window=1024)
    app = create_app(base, TorchServeEngine(base), ServeSettings(layers_dir=tmp_path / "layers"))
    wait = WebDriverWait(browser, 60)
    with LiveServer(app) as live:
        browser.get(live.root + "/")
        wait.until(lambda d: "base tiny-0" in d.find_element(By.ID, "meta").text)
        name = browser.find_element(By.ID, "name")
        name.clear()
        name.send_keys("sage")
        Select(browser.find_element(By.ID, "kind")).select_by_visible_text("prompt")
        box = browser.find_element(By.ID, "manifesto")
        browser.execute_script("arguments[0].value = arguments[1];", box, SAGE)
        browser.find_element(By.ID, "compile").click()
        wait.until(lambda d: "compiled sage" in d.find_element(By.ID, "progress").text)
        assert (tmp_path / "layers" / "sage" / "layer.json").is_file()

        for field, value in [("prompt", "Who are you?"), ("maxtok", "10")]:
            el = browser.find_element(By.ID, field)
            el.clear()
            el.send_keys(value)
        browser.find_element(By.ID, "ask").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card[data-done='1']")) == 2)
        cards = {c.get_attribute("data-model"): c for c in browser.find_elements(By.CSS_SELECTOR, ".card")}
        assert set(cards) == {"tiny-0", "tiny-0@sage"}
        assert "fidelity 1.000" in cards["tiny-0@sage"].find_element(By.CSS_SELECTOR, ".fig").text
        for model, el in cards.items():
            expected = httpx.post(live.url + "/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": "Who are you?"}], "max_tokens": 10, "temperature": 0,
            }, timeout=60).json()["choices"][0]["message"]["content"]
            shown = browser.execute_script("return arguments[0].querySelector('.answer').textContent;", el)
            assert shown == expected, model
        assert cards["tiny-0"].find_element(By.CSS_SELECTOR, ".answer").text != cards["tiny-0@sage"].find_element(By.CSS_SELECTOR, ".answer").text
