"""The chat page (GET /) in headless Chromium against a real bitnet-serve on 127.0.0.1.

Usage: python chat_page_check.py PATH/TO/bitnet-serve SCREENSHOT_DIR

Starts servers with the bundled demo model on OS-chosen ports and drives Debian's Chromium
through its chromedriver: a reply streams in over several updates, Shift+Enter, stopping a
reply frees the server's slot, the conversation survives a reload, Markdown is rendered and
HTML from the model or the user is shown as text, errors (400, 401, 429, a lost connection)
are shown in the page, and an API key asked for on a 401 works. Writes screenshots at 360 and
1440 px wide, light and dark, into SCREENSHOT_DIR. Exits non-zero on the first failure.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# As root in a closed sandbox: no sandbox, no GPU, nothing that reaches for the network, and a
# fresh profile each time.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def start(binary, *args):
    proc = subprocess.Popen(
        [binary, "--port", "0", *args], stderr=subprocess.PIPE, text=True
    )
    for line in proc.stderr:
        if "listening on http://" in line:
            addr = line.split("listening on http://")[1].split()[0]
            break
    else:
        raise SystemExit("bitnet-serve did not start")
    # Keep draining stderr so the server never blocks on it.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    for _ in range(300):
        try:
            if urllib.request.urlopen(f"http://{addr}/health").status == 200:
                break
        except Exception:
            time.sleep(0.05)
    return proc, f"http://{addr}"


def browser(profile):
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1440,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait(driver, condition, what, timeout=30):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.02).until(lambda d: condition())
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}") from None


def metric(base, name, key=None):
    request = urllib.request.Request(f"{base}/metrics")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    text = urllib.request.urlopen(request).read().decode()
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


class Page:
    def __init__(self, driver, base):
        self.d = driver
        self.base = base
        driver.get(base + "/")
        self.ready()

    def ready(self):
        wait(self.d, lambda: self.js("return document.getElementById('model').textContent")
             == "bitnet-demo", "the model name in the header")

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def el(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def all(self, css):
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def texts(self):
        """Each message's role and shown text, in order."""
        return self.js("""return [...document.querySelectorAll('#log article')].map(a =>
            [a.className, (a.querySelector('.content') || a).textContent])""")

    def set_field(self, css, value):
        if self.el("#settings").get_attribute("open") is None:
            self.el("#settings summary").click()
        field = self.el(css)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.BACKSPACE)
        if value:
            field.send_keys(value)

    def send(self, text, max_tokens):
        self.set_field("#max-tokens", str(max_tokens))
        self.el("#prompt").send_keys(text, Keys.ENTER)

    def last_reply(self):
        return self.all(".msg.assistant")[-1]

    def reply_state(self):
        return self.js("const r = document.querySelectorAll('.msg.assistant');"
                       "return r.length ? r[r.length - 1].dataset.state : null")

    def wait_reply(self, state="done"):
        wait(self.d, lambda: self.reply_state() not in (None, "streaming"), "the reply to end")
        assert self.reply_state() == state, (self.reply_state(), self.texts())
        return self.last_reply()

    def wait_error(self, needle):
        def shown():
            errors = self.all(".msg.error")
            return errors and needle in errors[-1].text
        wait(self.d, shown, f"an error saying {needle!r}")
        error = self.all(".msg.error")[-1]
        assert error.get_attribute("role") == "alert"
        return error.text

    def wait_streaming_text(self):
        wait(self.d, lambda: self.reply_state() == "streaming"
             and self.last_reply().find_element(By.CSS_SELECTOR, ".content").text,
             "streamed text")

    def emulate(self, width, height, scheme):
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        self.d.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": scheme}]})

    def no_console_errors(self):
        """No script errors and nothing blocked by the Content-Security-Policy."""
        bad = [e["message"] for e in self.d.get_log("browser")
               if "Uncaught" in e["message"] or "Content Security Policy" in e["message"]]
        assert not bad, bad


MARKDOWN = """# A title

Some **bold**, *emphasis*, `code <b>x</b>`, [a link](https://example.com/a?b=1) and [bad](javascript:alert(1)).

```rust
fn main() {
    println!("<script>alert(1)</script>");
}
```

- one
- two with `code`

3. three
4. four

> quoted <i>text</i>

<img src=x onerror="document.title='pwned'">"""

CODE = 'fn main() {\n    println!("<script>alert(1)</script>");\n}'


def check_without_key(binary, shots, profile):
    # One slot on one thread with the scalar kernels: a reply streams slowly enough to watch
    # (about 100 tokens/s) and to stop.
    proc, base = start(binary, "-np", "1", "-t", "1", "--kernel", "scalar")
    driver = browser(profile)
    try:
        page = Page(driver, base)
        assert page.js("return document.activeElement.id") == "prompt", "focus at load"
        assert page.el("#empty").is_displayed()

        # Streaming: the reply element's text grows over several updates.
        page.js("""window.lengths = [];
            new MutationObserver(() => {
              const r = document.querySelectorAll('.msg.assistant .content');
              if (r.length) window.lengths.push(r[r.length - 1].textContent.length);
            }).observe(document.getElementById('log'),
                       {subtree: true, childList: true, characterData: true});""")
        page.send("Hello there", 60)
        reply = page.wait_reply()
        lengths = page.js("return window.lengths")
        growing = sorted(set(n for n in lengths if n > 0))
        assert len(growing) >= 2, f"the reply appeared in one piece: {lengths}"
        text = reply.find_element(By.CSS_SELECTOR, ".content").get_attribute("textContent")
        assert text.strip() and len(text) == growing[-1], (text, growing)
        stats = reply.find_element(By.CSS_SELECTOR, ".stats").text
        assert re.fullmatch(
            r"first token \d+ ms · 60 tokens · [\d.]+ tokens/s · max tokens reached", stats
        ), stats
        assert page.all(".msg.assistant .content")[-1].get_attribute("aria-live") == "polite"

        # Shift+Enter is a new line; Enter sends.
        prompt = page.el("#prompt")
        page.set_field("#max-tokens", "40")
        prompt.send_keys("line one")
        ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
        prompt.send_keys("line two")
        assert prompt.get_attribute("value") == "line one\nline two"
        assert len(page.all(".msg.user")) == 1
        prompt.send_keys(Keys.ENTER)
        page.wait_reply()
        assert prompt.get_attribute("value") == ""
        assert page.texts()[2] == ["msg user", "line one\nline two"], page.texts()

        # Tab order: the message box, then Send, then Stop (disabled while idle, so skipped).
        prompt.click()
        ActionChains(driver).send_keys(Keys.TAB).perform()
        assert page.js("return document.activeElement.id") == "send"

        # The conversation and the settings survive a reload.
        before = page.texts()
        page.d.refresh()
        page.ready()
        assert page.texts() == before, (before, page.texts())
        assert page.el("#max-tokens").get_attribute("value") == "40"
        assert "60 tokens" in page.all(".msg.assistant .stats")[0].text

        for width, height in ((1440, 900), (360, 780)):
            for scheme in ("light", "dark"):
                page.emulate(width, height, scheme)
                page.d.refresh()  # the page opens its settings on wide screens at load
                page.ready()
                driver.save_screenshot(os.path.join(shots, f"chat-{width}-{scheme}.png"))
        page.emulate(1440, 900, "light")
        page.d.refresh()
        page.ready()

        # A 400 shows the server's message; Retry after fixing the setting works.
        page.el("#new-chat").click()
        assert page.texts() == [] and page.el("#empty").is_displayed()
        page.send("Hi", 0)
        page.wait_error("The server answered 400: max_tokens is 0; it must be at least 1")
        assert not page.all(".msg.assistant")
        page.set_field("#max-tokens", "20")
        page.all(".msg.error button")[-1].click()
        page.wait_reply()
        assert not page.all(".msg.error")

        # Stop cancels the stream, and the server frees the slot.
        page.el("#new-chat").click()
        page.send("Tell me a long story", 240)
        page.wait_streaming_text()
        assert metric(base, "bitnet_slots_busy") == 1
        page.el("#stop").click()
        reply = page.wait_reply("stopped")
        stopped_at = reply.find_element(By.CSS_SELECTOR, ".content").text
        deadline = time.time() + 10
        while metric(base, "bitnet_slots_busy") != 0:
            assert time.time() < deadline, "the slot stays busy after Stop"
            time.sleep(0.02)
        stats = reply.find_element(By.CSS_SELECTOR, ".stats").text
        tokens = int(re.search(r"(\d+) tokens? ·", stats).group(1))
        assert tokens < 240 and stats.endswith("· stopped"), stats
        time.sleep(0.3)
        assert reply.find_element(By.CSS_SELECTOR, ".content").text == stopped_at
        assert page.js("return document.activeElement.id") == "prompt"
        # Escape in the message box stops too.
        page.send("Another long one", 240)
        page.wait_streaming_text()
        page.el("#prompt").send_keys(Keys.ESCAPE)
        page.wait_reply("stopped")

        # User input is shown as typed, never as HTML.
        page.el("#new-chat").click()
        typed = "<img src=x onerror=\"document.title='pwned'\"><b>bold?</b> **not markdown**"
        page.send(typed, 10)
        page.wait_reply()
        assert page.texts()[0] == ["msg user", typed], page.texts()

        # Markdown from a stored reply (the demo model writes none): rendered, code verbatim,
        # no HTML, no javascript: link. A reply that was streaming when the page went away is
        # shown as interrupted.
        stored = {"messages": [
            {"role": "user", "content": "Show me Markdown"},
            {"role": "assistant", "content": MARKDOWN, "state": "done", "stats": {}},
            {"role": "assistant", "content": "cut", "state": "streaming", "stats": {}},
        ]}
        # Stored from another page of the same origin: the chat page saves its own
        # conversation when it is left.
        driver.get(base + "/health")
        page.js("localStorage.setItem('bitnet-chat', arguments[0])", json.dumps(stored))
        driver.get(base + "/")
        page.ready()
        md = page.all(".msg.assistant .content")[0]

        def q(css):
            return [e.get_attribute("textContent") for e in md.find_elements(By.CSS_SELECTOR, css)]

        assert q("h3") == ["A title"], q("h3")
        assert q("strong") == ["bold"] and q("em") == ["emphasis"]
        assert q("p > code") == ["code <b>x</b>"], q("p > code")
        links = [(a.get_attribute("href"), a.text) for a in md.find_elements(By.CSS_SELECTOR, "a")]
        assert links == [("https://example.com/a?b=1", "a link")], links
        assert "and bad." in md.text
        assert q("pre code") == [CODE], q("pre code")
        assert md.find_element(By.CSS_SELECTOR, "pre").get_attribute("data-lang") == "rust"
        assert q("ul > li") == ["one", "two with code"] and q("ol > li") == ["three", "four"]
        assert md.find_element(By.CSS_SELECTOR, "ol").get_attribute("start") == "3"
        assert q("blockquote") == ["quoted <i>text</i>"], q("blockquote")
        assert q("p")[-1] == "<img src=x onerror=\"document.title='pwned'\">", q("p")
        assert not page.all("#log img, #log script, #log b, #log i")
        assert page.all(".msg.assistant")[1].get_attribute("data-state") == "interrupted"
        assert "interrupted" in page.all(".msg.assistant .stats")[1].text
        assert driver.title == "bitnet-serve chat"
        page.emulate(1440, 900, "dark")
        driver.save_screenshot(os.path.join(shots, "markdown-1440-dark.png"))

        # A connection that drops mid-reply, then a server that is gone; on a phone.
        page.emulate(360, 780, "light")
        driver.refresh()
        page.ready()
        page.el("#new-chat").click()
        page.send("Keep talking", 240)
        page.wait_streaming_text()
        proc.kill()
        proc.wait(timeout=30)
        page.wait_error("The connection to the server was lost")
        assert page.reply_state() == "failed"
        assert page.last_reply().find_element(By.CSS_SELECTOR, ".content").text
        page.send("Anyone there?", 10)
        page.wait_error("Cannot reach the server")
        page.el("#settings summary").click()
        driver.save_screenshot(os.path.join(shots, "errors-360-light.png"))
        page.no_console_errors()
    finally:
        driver.quit()
        proc.kill()
        proc.wait(timeout=30)


def check_with_key(binary, shots, profile):
    # One slot and one waiting place, so two long requests make the page's a 429.
    proc, base = start(binary, "--api-key", "sesame", "-np", "1", "--queue", "1",
                       "-t", "1", "--kernel", "scalar")
    driver = browser(profile)
    try:
        page = Page(driver, base)
        dialog = page.el("#key-dialog")
        page.send("Hello", 10)
        message = "invalid or missing API key"
        page.wait_error(f"The server answered 401: {message}")
        wait(driver, dialog.is_displayed, "the API key dialog")
        assert message in page.el("#key-error").text
        assert page.js("return document.activeElement.id") == "key"
        page.el("#key").send_keys("wrong", Keys.ENTER)
        page.wait_error(f"The server answered 401: {message}")
        wait(driver, dialog.is_displayed, "the API key dialog, again")
        driver.save_screenshot(os.path.join(shots, "key-1440-light.png"))
        page.el("#key").send_keys("sesame", Keys.ENTER)
        page.wait_reply()
        assert not dialog.is_displayed() and not page.all(".msg.error")
        assert page.js("return sessionStorage.getItem('bitnet-api-key')") == "sesame"
        assert "sesame" not in page.js("return JSON.stringify(localStorage)")
        page.send("Again", 10)
        page.wait_reply()
        assert not dialog.is_displayed()

        # 429: the slot and the waiting place are taken. A demo request lasts a fraction of a
        # second, so three clients keep resending until told to stop: the server stays full.
        stop = threading.Event()

        def long_requests():
            body = json.dumps({"prompt": "ROMEO:", "max_tokens": 240, "ignore_eos": True})
            while not stop.is_set():
                request = urllib.request.Request(
                    f"{base}/v1/completions", body.encode(),
                    {"Content-Type": "application/json", "Authorization": "Bearer sesame"})
                try:
                    urllib.request.urlopen(request).read()
                except urllib.error.HTTPError as e:
                    assert e.code == 429, e

        workers = [threading.Thread(target=long_requests, daemon=True) for _ in range(3)]
        for w in workers:
            w.start()
        deadline = time.time() + 10
        while not (metric(base, "bitnet_requests_waiting", "sesame") == 1
                   and metric(base, "bitnet_slots_busy", "sesame") == 1):
            assert time.time() < deadline, "the server never got busy"
            time.sleep(0.01)
        page.send("Busy?", 10)
        page.wait_error("The server answered 429:")
        stop.set()
        for w in workers:
            w.join()
        page.no_console_errors()
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=30)


def check(binary, shots):
    os.makedirs(shots, exist_ok=True)
    with tempfile.TemporaryDirectory() as profiles:
        check_without_key(binary, shots, os.path.join(profiles, "a"))
        check_with_key(binary, shots, os.path.join(profiles, "b"))
    print("chat page checks: 2 passed, 0 failed")


if __name__ == "__main__":
    check(sys.argv[1], sys.argv[2])
