"""`edgelm serve`'s chat page at /, in a real headless Chromium (Debian's, driven by Playwright).

The page must work from the server alone (nothing loaded from elsewhere), honour the API key, stream a
reply equal to the runtime's, follow a pasted JSON schema, and stop a reply half way (freeing its row).
EDGELM_SCREENSHOT=docs/chat-page.png also saves the page's picture for the docs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from edgelm.runtime import load
from tests.test_serve import KEY, Server

pytestmark = pytest.mark.real
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def server(smollm2_bundle):
    srv = Server(str(smollm2_bundle), "--name", "smol", "--max-batch", "2")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make browser` installs it"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 760}, bypass_csp=True)  # the test evaluates JS
    page = context.new_page()
    outside = []
    page.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
    page.goto(server.url + "/")
    yield page
    assert outside == []  # the page loads nothing from outside the box
    context.close()


def say(page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def reply(page):
    return page.locator(".msg.assistant").last


def test_the_page_streams_a_reply_equal_to_the_runtimes_with_the_key(page, server, smollm2_bundle):
    page.wait_for_function("document.querySelector('#stats').textContent.includes('Incorrect or missing API key')")
    page.fill("#key", KEY)
    page.dispatch_event("#key", "change")
    page.wait_for_function("document.querySelector('#model').options.length === 1")
    assert page.input_value("#model") == "smol"
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "24")
    say(page, "What is the capital of France?")
    page.wait_for_function("document.querySelector('#stats').textContent.includes('tokens/s')")
    page.wait_for_function("!document.querySelector('#go').disabled")
    want = load(smollm2_bundle, provider="cpu").generate([{"role": "user", "content": "What is the capital of France?"}],
                                                         max_new_tokens=24, temperature=0)
    assert reply(page).text_content() == want
    if os.environ.get("EDGELM_SCREENSHOT"):
        page.screenshot(path=os.environ["EDGELM_SCREENSHOT"])


def test_a_pasted_json_schema_shapes_the_reply_and_stop_ends_a_long_one(page, server):
    import jsonschema

    page.fill("#key", KEY)
    page.dispatch_event("#key", "change")
    page.wait_for_function("document.querySelector('#model').options.length === 1")
    schema = {"type": "object", "properties": {"product": {"type": "string", "maxLength": 30},
                                               "quantity": {"type": "integer", "minimum": 1, "maximum": 100}},
              "required": ["product", "quantity"], "additionalProperties": False}
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "64")
    page.fill("#schema", json.dumps(schema))
    say(page, "I would like 3 red pens. Reply in JSON.")
    page.wait_for_function("!document.querySelector('#go').disabled && document.querySelector('#stats').textContent")
    jsonschema.validate(json.loads(reply(page).text_content()), schema)

    page.click("#clear")
    page.fill("#schema", "")
    page.fill("#max-tokens", "1500")
    say(page, "Write a very long story about a lighthouse keeper and the sea.")
    page.wait_for_function("document.querySelectorAll('.msg.assistant')[0]?.textContent.length > 40")
    page.click("#stop")
    page.wait_for_function("document.querySelector('#stats').textContent.includes('(stopped)')")
    stopped = reply(page).text_content()
    page.wait_for_timeout(1500)
    assert reply(page).text_content() == stopped  # nothing arrives after stop
    page.wait_for_function("!document.querySelector('#go').disabled")
    assert server.metric("edgelm_running_requests", 'model="smol"') == 0  # its row left the batch
