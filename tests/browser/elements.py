#!/usr/bin/env python3
"""Real-browser check of Strongroom hosted card fields: headless Chromium, driven over WebDriver,
loads merchant pages that use strongroom.js exactly as a merchant would, against a running vault.

usage: elements.py < config.json   (see tests/browser/README.md for the keys)
Prints one JSON report line on stdout; diagnostics go to stderr. Exits 0 whenever the browser
started, whatever the checks found (the Rust test asserts on the report), 1 if it could not.
"""
import json
import os
import ssl
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError as e:
    print(f"browser: selenium is required (pip install selenium==4.38.0): {e}", file=sys.stderr)
    sys.exit(2)

PAN = "4242424242424242"
PAN_SPELLINGS = [PAN, "4242 4242 4242 4242"]
WAIT_S = 8.0
# The SDK gives up on a frame that never says ready after ten seconds.
UNAVAILABLE_WAIT_S = 13.0

HEAD = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Checkout</title>
<style>body{font-family:sans-serif;max-width:440px;margin:16px}#card,.f{margin:12px 0}</style>
<script src="%(vault)s/js/v1/strongroom.js"></script></head><body>
<label for="email">Email</label> <input id="email" type="email">
"""
TAIL = """<button id="pay" type="button">Pay</button>
<pre id="events"></pre><pre id="result"></pre>
<script>
function log(line) { document.getElementById('events').textContent += line + '\\n'; }
function show(res) { document.getElementById('result').textContent = JSON.stringify(res); }
</script>
<script>
var sr = Strongroom(%(pk)s);
%(body)s
</script></body></html>
"""
PAGES = {
    "card": """<div id="card"></div>""", "card_js": """
var elements = sr.elements({clientSecret: %(secret)s});
var card = elements.create('card', {style: {base: {fontSize: '16px', color: '#32325d',
  backgroundImage: 'url(data:image/gif;base64,R0lGODlhAQABAAAAACw=)', fontWeight: '600; color: red'}}});
['ready', 'change', 'focus', 'blur', 'error'].forEach(function (name) {
  card.on(name, function (ev) { log(name + ' ' + JSON.stringify(ev)); });
});
async function pay() { show(await card.tokenize()); }
card.on('submit', pay);
document.getElementById('pay').addEventListener('click', pay);
card.mount('#card');""",
    "split": """<div class="f" id="number"></div><div class="f" id="expiry"></div>
<div class="f" id="cvc"></div>""", "split_js": """
var elements = sr.elements({clientSecret: %(secret)s});
['cardNumber', 'cardExpiry', 'cardCvc'].forEach(function (type) {
  var el = elements.create(type);
  el.on('ready', function () { log('ready ' + type); });
  el.on('error', function (ev) { log('error ' + JSON.stringify(ev)); });
  el.mount('#' + type.slice(4).toLowerCase());
});
document.getElementById('pay').addEventListener('click', async function () {
  show(await elements.tokenize());
});""",
    "direct": """<input id="number" autocomplete="cc-number"> <input id="exp" autocomplete="cc-exp">
<input id="cvc" autocomplete="cc-csc">""", "direct_js": """
document.getElementById('pay').addEventListener('click', async function () {
  var exp = document.getElementById('exp').value.split('/');
  show(await sr.tokenize({
    number: document.getElementById('number').value,
    exp_month: Number(exp[0]), exp_year: Number(exp[1]),
    cvc: document.getElementById('cvc').value,
  }, {clientSecret: %(secret)s}));
});""",
}

# Names a fresh about:blank frame also has are the browser's; the rest were set by the page or
# the SDK, and everything reachable from them is searched for the card number.
GLOBALS_JS = """
const spellings = arguments[0];
const probe = document.createElement('iframe');
document.body.appendChild(probe);
const builtin = new Set(Object.keys(probe.contentWindow));
probe.remove();
const names = Object.keys(window).filter((k) => !builtin.has(k) && !/^\\d+$/.test(k));
const seen = new Set();
const texts = [];
function walk(v, depth) {
  if (v === null || v === undefined) return;
  if (typeof v !== 'object' && typeof v !== 'function') { texts.push(String(v)); return; }
  if (seen.has(v) || depth > 8 || v instanceof Node || v === window) return;
  seen.add(v);
  try { texts.push(JSON.stringify(v) || ''); } catch (e) { /* cycles: the walk covers them */ }
  for (const k of Object.keys(v)) { try { walk(v[k], depth + 1); } catch (e) { /* getters */ } }
}
for (const n of names) { try { walk(window[n], 0); } catch (e) { /* cross-origin */ } }
return {names, clean: !texts.some((t) => spellings.some((s) => t.includes(s)))};
"""


def log(msg):
    print(f"browser: {msg}", file=sys.stderr, flush=True)


def serve_pages(cfg, port):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            pass

        def do_GET(self):
            url = urlparse(self.path)
            page = url.path.strip("/")
            session = parse_qs(url.query).get("s", [""])[0]
            if page == "favicon.ico":
                self.send_response(204)
                self.end_headers()
                return
            if page not in ("card", "split", "direct") or session not in cfg["sessions"]:
                self.send_error(404)
                return
            js = PAGES[page + "_js"] % {"secret": json.dumps(cfg["sessions"][session])}
            html = (HEAD % {"vault": cfg["vault"]} + PAGES[page]
                    + TAIL % {"pk": json.dumps(cfg["pk"]), "body": js}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(html)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(html)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Run:
    def __init__(self, cfg):
        self.cfg = cfg
        self.console = []  # every console message so far, in order
        self.frame_console = []  # BiDi: console and errors of every frame, the vault's too
        self.frame_seen = 0
        opts = webdriver.ChromeOptions()
        opts.binary_location = cfg.get("chromium") or "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--no-first-run", "--disable-extensions",
                    "--disable-sync", "--ignore-certificate-errors", "--window-size=480,900"):
            opts.add_argument(arg)
        # The legacy log has the browser's own messages (CSP refusals, failed loads) but only
        # for the top frame; BiDi adds what scripts in the cross-site vault frames print.
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        opts.enable_bidi = True
        service = Service(cfg.get("chromedriver") or "/usr/bin/chromedriver")
        self.d = webdriver.Chrome(service=service, options=opts)
        self.d.set_page_load_timeout(20)
        self.frames_covered = False
        try:
            self.d.script.add_console_message_handler(
                lambda m: self.frame_console.append(f"console {m.level}: {m.text}"))
            self.d.script.add_javascript_error_handler(
                lambda m: self.frame_console.append(f"javascript error: {m.text}"))
            self.frames_covered = True
        except Exception as e:  # noqa: BLE001 (the legacy log still works without it)
            log(f"no BiDi console, frames' own logs are not covered: {e}")

    def drain(self):
        try:
            got = [e.get("message", "") for e in self.d.get_log("browser")]
        except WebDriverException:
            got = []
        # BiDi announces itself in the page's log; that line is the harness, not the page.
        got = [m for m in got if "Launching Mapper instance" not in m]
        end = len(self.frame_console)
        got += self.frame_console[self.frame_seen:end]
        self.frame_seen = end
        self.console.extend(got)
        return got

    def wait(self, what, fn, timeout=WAIT_S):
        end = time.monotonic() + timeout
        while True:
            try:
                value = fn()
                if value:
                    return value
            except WebDriverException:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def open(self, page, session, port=None):
        self.d.switch_to.default_content()
        port = port or self.cfg["allowed_port"]
        self.d.get(f"http://127.0.0.1:{port}/{page}?s={session}")

    def events(self):
        return self.d.find_element(By.ID, "events").get_attribute("textContent")

    def wait_ready(self, count=1):
        self.wait("ready", lambda: self.events().count("ready") >= count)

    def result(self, timeout=WAIT_S):
        text = self.wait("result", lambda: self.d.find_element(By.ID, "result")
                         .get_attribute("textContent"), timeout)
        return json.loads(text)

    def frame(self, container):
        self.d.switch_to.default_content()
        self.d.switch_to.frame(self.d.find_element(By.CSS_SELECTOR, f"#{container} iframe"))

    def type_in(self, container, values):
        self.frame(container)
        for field_id, text in values.items():
            self.d.find_element(By.ID, field_id).send_keys(text)
        self.d.switch_to.default_content()

    def pay(self):
        self.d.switch_to.default_content()
        self.d.find_element(By.ID, "pay").click()

    def shot(self, name, report):
        folder = self.cfg.get("screenshots")
        if not folder:
            return
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        self.d.switch_to.default_content()
        self.d.find_element(By.ID, "card").screenshot(path)
        report["screenshots"].append(path)

    def keys(self, *keys):
        ActionChains(self.d).send_keys(*keys).perform()


def outcome(res, into):
    into["token"] = (res.get("token") or {}).get("id")
    into["error"] = res.get("error")


def scenario_ok(run, out, report):
    run.open("card", "ok")
    run.wait_ready()
    run.shot("elements-default.png", report)
    # The page asked for an allowed colour, a background image (not on the allowlist) and
    # a font weight smuggling a second declaration: only the colour may arrive.
    run.frame("card")
    out["style"] = run.d.execute_script(
        "const s = getComputedStyle(document.getElementById('sr-number'));"
        "return {color: s.color, backgroundImage: s.backgroundImage, fontWeight: s.fontWeight};")
    run.d.switch_to.default_content()
    run.type_in("card", {"sr-number": "4242 4242 4242 4242", "sr-expiry": "12 / 34", "sr-cvc": "123"})
    run.pay()
    outcome(run.result(), out)
    run.frame("card")
    out["inputs_cleared"] = all(run.d.find_element(By.ID, i).get_attribute("value") == ""
                                for i in ("sr-number", "sr-expiry", "sr-cvc"))
    run.d.switch_to.default_content()
    source = run.d.page_source
    out["parent_dom_clean"] = not any(s in source for s in PAN_SPELLINGS)
    found = run.d.execute_script(GLOBALS_JS, PAN_SPELLINGS)
    out["globals_checked"] = found["names"]
    out["globals_clean"] = bool(found["clean"])
    messages = run.drain()
    out["console"] = messages
    out["console_clean"] = not any(s in m for m in messages for s in PAN_SPELLINGS)


def scenario_split(run, out, report):
    run.open("split", "split")
    run.wait_ready(3)
    run.type_in("number", {"sr-number": "4242 4242 4242 4242"})
    run.type_in("expiry", {"sr-expiry": "12 / 34"})
    run.type_in("cvc", {"sr-cvc": "123"})
    run.pay()
    outcome(run.result(), out)


def scenario_direct(run, out, report):
    run.open("direct", "direct")
    run.d.find_element(By.ID, "number").send_keys(PAN)
    run.d.find_element(By.ID, "exp").send_keys("12/2034")
    run.d.find_element(By.ID, "cvc").send_keys("123")
    run.pay()
    outcome(run.result(), out)


def scenario_keyboard(run, out, report):
    run.open("card", "keyboard")
    run.wait_ready()
    run.d.find_element(By.ID, "email").click()
    out["focus_reached"] = False
    for presses in range(1, 6):
        run.keys(Keys.TAB)
        if run.d.execute_script("return document.activeElement.tagName") != "IFRAME":
            continue
        run.frame("card")
        active = run.d.execute_script("return document.activeElement.id")
        run.d.switch_to.default_content()
        if active == "sr-number":
            out["focus_reached"], out["tab_presses"] = True, presses
            break
    if not out["focus_reached"]:
        return
    # A wrong number, then leave the field: the error must show and be announced.
    run.keys("4242 4242 4242 4241", Keys.TAB)
    run.frame("card")
    number = run.d.find_element(By.ID, "sr-number")
    out["aria_invalid"] = number.get_attribute("aria-invalid")
    described = number.get_attribute("aria-describedby") or ""
    out["described_by"] = described
    message = run.d.find_element(By.ID, described) if described else None
    out["error_text"] = message.text if message else ""
    out["error_referenced"] = bool(message and message.text.strip())
    out["error_role"] = message.get_attribute("role") if message else None
    run.shot("elements-error.png", report)
    # Back, replace it, and go on with the keyboard only; Enter in the last field submits.
    ActionChains(run.d).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT) \
        .key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).perform()
    run.keys(Keys.BACKSPACE, "4242 4242 4242 4242", Keys.TAB)
    run.frame("card")
    out["aria_invalid_cleared"] = run.d.find_element(By.ID, "sr-number").get_attribute("aria-invalid") is None
    run.d.switch_to.default_content()
    run.keys("1234")
    run.frame("card")
    out["expiry_formatted"] = run.d.find_element(By.ID, "sr-expiry").get_attribute("value")
    run.d.switch_to.default_content()
    run.keys(Keys.TAB, "123", Keys.ENTER)
    outcome(run.result(), out)


def scenario_closed(session):
    def check(run, out, report):
        run.open("card", session)
        run.wait("error event", lambda: "error " in run.events())
        run.frame("card")
        out["message"] = run.d.find_element(By.ID, "sr-state").text
        out["fields_shown"] = run.d.find_element(By.ID, "sr-number").is_displayed()
        run.d.switch_to.default_content()
        event = [line for line in run.events().splitlines() if line.startswith("error ")][0]
        out["error_event"] = json.loads(event[len("error "):]).get("error", {}).get("code")
        run.pay()
        out["tokenize_error"] = (run.result().get("error") or {}).get("code")
    return check


def scenario_other_origin(run, out, report):
    run.drain()
    run.open("card", "other_origin", port=run.cfg["other_port"])
    messages = []

    def settled():
        # Either the browser said it refused the frame, or the frame shows a usable input.
        messages.extend(run.drain())
        if any("frame-ancestors" in m for m in messages):
            return "refused"
        try:
            run.frame("card")
            number = run.d.find_element(By.ID, "sr-number")
            return "usable" if number.is_displayed() and number.is_enabled() else None
        finally:
            run.d.switch_to.default_content()

    try:
        out["number_input_usable"] = run.wait("the frame to settle", settled, 5) == "usable"
    except TimeoutError:
        out["number_input_usable"] = False
    run.pay()
    res = run.result(UNAVAILABLE_WAIT_S)
    out["tokenize_error"] = (res.get("error") or {}).get("code")
    out["element_unavailable"] = "element_unavailable" in run.events()
    messages.extend(run.drain())
    out["console"] = messages
    out["frame_ancestors_refused"] = any("frame-ancestors" in m for m in messages)


def vault_reachable(cfg):
    try:
        ctx = ssl.create_default_context(cafile=cfg["ca"]) if cfg.get("ca") else None
        with urllib.request.urlopen(cfg["vault"] + "/js/v1/strongroom.js", context=ctx, timeout=5) as r:
            return r.status == 200
    except Exception as e:  # noqa: BLE001 (any failure means the same here)
        log(f"vault not reachable: {e}")
        return False


def main():
    started = time.monotonic()
    cfg = json.load(sys.stdin)
    report = {"vault_reachable": vault_reachable(cfg), "failures": {}, "screenshots": []}
    servers = [serve_pages(cfg, cfg["allowed_port"]), serve_pages(cfg, cfg["other_port"])]
    try:
        run = Run(cfg)
    except WebDriverException as e:
        log(f"the browser did not start: {e}")
        report["failures"]["browser"] = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(json.dumps(report))
        return 1
    report["browser"] = run.d.capabilities.get("browserVersion")
    report["console_frames_covered"] = run.frames_covered
    scenarios = [("ok", scenario_ok), ("split", scenario_split), ("direct", scenario_direct),
                 ("keyboard", scenario_keyboard), ("used", scenario_closed("used")),
                 ("expired", scenario_closed("expired")), ("other_origin", scenario_other_origin)]
    try:
        for name, fn in scenarios:
            out = report.setdefault(name, {})
            t = time.monotonic()
            try:
                fn(run, out, report)
            except Exception as e:  # noqa: BLE001 (recorded, and the next scenario runs)
                report["failures"][name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                log(f"{name}: {report['failures'][name]}")
            log(f"{name}: {time.monotonic() - t:.1f}s")
        run.drain()
        report["console_clean_all"] = not any(s in m for m in run.console for s in PAN_SPELLINGS)
    finally:
        run.d.quit()
        for s in servers:
            s.shutdown()
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
