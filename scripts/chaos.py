#!/usr/bin/env python3
"""Chaos run against a `strongroom cluster` (scripts/chaos starts and stops everything).

Load: worker threads tokenize new cards on the nodes in turn, read each back on another
node, and now and then reveal one (a restricted key with cards:reveal and an OTP). Faults,
on a schedule: kill -9 a node and start it again; stop this run's own Redis and start it
again. Afterwards it checks that every acknowledged card reads with the right masked number
on every node, that no card refused to the client exists (tokenizing its number again makes a
new card), that every acknowledged card's `card.created` event reached the webhook receiver
at least once, and it prints per fault the error rate while it lasted and the time until
requests succeeded again. Loopback only.

    python3 scripts/chaos.py CLUSTER_JSON STRONGROOM_BIN DATA_DIR REDIS_PORT DURATION_S OUT_JSON
"""

import http.server
import json
import random
import subprocess
import sys
import threading
import time

import requests


def proxy(listen_port: int, target_file: str):
    """The database's writer endpoint, as Patroni's HAProxy or a managed service's DNS name
    is: connections go to the port in `target_file`; when it changes (a failover), every
    connection to the old primary is cut."""
    import socket

    conns = []
    lock = threading.Lock()

    def target() -> int:
        return int(open(target_file).read().strip())

    def pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            # shutdown, not only close: the other pump may be blocked on the same socket,
            # and the far end must see the end now (a node killed in a transaction must
            # release its locks on the database, as it does without a proxy).
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                x.close()

    def watch():
        current = target()
        while True:
            time.sleep(0.05)
            now = target()
            if now != current:
                current = now
                with lock:
                    for x in conns:
                        try:
                            x.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                    conns.clear()

    threading.Thread(target=watch, daemon=True).start()
    srv = socket.create_server(("127.0.0.1", listen_port))
    while True:
        client, _ = srv.accept()
        try:
            up = socket.create_connection(("127.0.0.1", target()), timeout=5)
            up.settimeout(None)
        except OSError:
            client.close()
            continue
        with lock:
            conns.extend([client, up])
        threading.Thread(target=pump, args=(client, up), daemon=True).start()
        threading.Thread(target=pump, args=(up, client), daemon=True).start()


if sys.argv[1] == "proxy":
    proxy(int(sys.argv[2]), sys.argv[3])
    sys.exit(0)

CLUSTER, BIN, DATA, REDIS_PORT, DURATION, OUT = sys.argv[1:7]
# With a primary/standby pair (scripts/chaos sets it up): its directory and the endpoint file.
PG = sys.argv[7] if len(sys.argv) > 7 else ""
DURATION = float(DURATION)
c = json.load(open(CLUSTER))
NODES = [n["url"] for n in c["nodes"]]
CA = c["ca_cert"]
SK = c["secret_key"]
ADMIN = c["admin_key"]
ACCT = c["account_id"]
H = {"Authorization": f"Bearer {SK}"}


def luhn_complete(body: str) -> str:
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return body + str((10 - total % 10) % 10)


SEQ = random.randrange(10**7)
seq_lock = threading.Lock()


def new_pan() -> str:
    global SEQ
    with seq_lock:
        SEQ += 1
        return luhn_complete("40000000%07d" % (SEQ % 10**7))


# ---- webhook receiver ----
delivered = set()
deliv_lock = threading.Lock()


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            ev = json.loads(body)
            card = ev.get("data", {}).get("object", {}).get("id") or ev.get("data", {}).get("id")
            if card:
                with deliv_lock:
                    delivered.add(card)
        except ValueError:
            pass
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=hook.serve_forever, daemon=True).start()
r = requests.post(f"{NODES[0]}/v1/webhook_endpoints", headers=H, verify=CA, timeout=10, json={
    "url": f"http://127.0.0.1:{hook.server_port}/hook", "enabled_events": ["card.created"]})
assert r.status_code == 201, r.text

# A restricted key for reveals.
r = requests.post(f"{NODES[0]}/v1/admin/accounts/{ACCT}/api_keys", verify=CA, timeout=10,
                  headers={"Authorization": f"Bearer {ADMIN}"},
                  json={"kind": "restricted", "mode": "test", "scopes": ["cards:reveal", "cards:read"]})
assert r.status_code == 201, r.text
RK = {"Authorization": f"Bearer {r.json()['secret']}"}

# ---- load ----
acked = {}  # card id -> pan
refused = []  # pans whose tokenization the client saw refused (an HTTP error status)
unanswered = []  # pans whose request got no answer (a node killed under it): either way
log = []  # (t, ok)
log_lock = threading.Lock()
stop = threading.Event()
T0 = time.monotonic()


def record(ok: bool, node: str = ""):
    with log_lock:
        log.append((time.monotonic() - T0, ok, node))


def worker(w: int):
    s = requests.Session()
    i = w
    last_reveal = 0.0
    while not stop.is_set():
        node = NODES[i % len(NODES)]
        other = NODES[(i + 1) % len(NODES)]
        i += 1
        pan = new_pan()
        try:
            r = s.post(f"{node}/v1/cards", headers=H, timeout=5, verify=CA,
                       json={"number": pan, "exp_month": 12, "exp_year": 2031})
        except requests.RequestException as e:
            if not unanswered:
                print(f"first unanswered request: {type(e).__name__}: {e}", file=sys.stderr)
            unanswered.append(pan)
            record(False, node)
            continue
        if r.status_code != 201:
            refused.append(pan)
            record(False, node)
            continue
        card = r.json()["id"]
        acked[card] = pan
        record(True, node)
        try:
            g = s.get(f"{other}/v1/cards/{card}", headers=H, timeout=5, verify=CA)
            record(g.status_code == 200, other)
            if w == 0 and time.monotonic() - last_reveal > 8:
                last_reveal = time.monotonic()
                o = s.post(f"{other}/v1/otp", headers=RK, timeout=5, verify=CA,
                           json={"purpose": "card.reveal", "card": card})
                if o.status_code == 201:
                    v = s.post(f"{other}/v1/cards/{card}/reveal", headers=RK, timeout=5, verify=CA,
                               json={"otp": o.json()["id"], "code": o.json()["test_code"]})
                    record(v.status_code == 200 and v.json().get("number") == pan, other)
        except requests.RequestException:
            record(False, other)


def cluster(*args):
    r = subprocess.run([BIN, "cluster", *args, "--data-dir", DATA], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit(f"strongroom cluster {' '.join(args)}: {r.stdout}{r.stderr}")


def redis_stop():
    subprocess.run(["redis-cli", "-p", REDIS_PORT, "shutdown", "nosave"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def redis_start():
    subprocess.run(["redis-server", "--port", REDIS_PORT, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--daemonize", "yes",
                    "--logfile", f"{DATA}/redis.log"], check=True)


def pg_failover():
    """kill -9 the primary's postmaster, promote the synchronous standby, move the endpoint."""
    pid = open(f"{PG}/a/postmaster.pid").readline().strip()
    subprocess.run(["kill", "-9", pid], check=True)
    # The binaries scripts/pg-pair started the pair with.
    pg_ctl = open(f"{PG}/bin").read().strip() + "/pg_ctl"
    subprocess.run(["runuser", "-u", "postgres", "--", pg_ctl,
                    "-D", f"{PG}/b", "promote", "-w"], check=True, stdout=subprocess.DEVNULL)
    port = open(f"{PG}/b/postgresql.conf").read().split("\nport = ")[-1].split()[0]
    # The new primary has no standby yet: without this it would wait for one at every commit
    # (what Patroni's strict synchronous mode chooses; its default mode does this).
    subprocess.run(["psql", f"postgres://postgres@127.0.0.1:{port}/postgres", "-qc",
                    "ALTER SYSTEM SET synchronous_standby_names = ''", "-qc",
                    "SELECT pg_reload_conf()"], check=True, stdout=subprocess.DEVNULL)
    with open(f"{PG}/endpoint.tmp", "w") as f:
        f.write(port)
    import os
    os.replace(f"{PG}/endpoint.tmp", f"{PG}/endpoint")


step = DURATION / 7
# (name, at, do, back at, undo, the node whose requests it affects: "" for all)
faults = [
    ("kill -9 node 2", step, lambda: cluster("kill", "--node", "2"),
     2 * step, lambda: cluster("start", "--node", "2"), NODES[1]),
    ("Redis stopped", 3 * step, redis_stop, 4 * step, redis_start, ""),
]
if PG:
    # The fault and its repair are one act: what is measured is the switch itself.
    faults.append(("PostgreSQL primary killed, standby promoted", 5 * step, pg_failover,
                   5 * step, lambda: None, ""))
threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
for t in threads:
    t.start()
events = []
for name, at, do, back_at, undo, node in faults:
    time.sleep(max(0.0, at - (time.monotonic() - T0)))
    start = time.monotonic() - T0
    do()
    time.sleep(max(0.0, back_at - (time.monotonic() - T0)))
    undone = time.monotonic() - T0
    undo()
    events.append((name, start, undone, time.monotonic() - T0, node))
time.sleep(max(0.0, DURATION - (time.monotonic() - T0)))
stop.set()
for t in threads:
    t.join()

# ---- after ----
report = {"duration_s": DURATION, "nodes": len(NODES), "acknowledged": len(acked),
          "refused": len(refused), "unanswered": len(unanswered), "faults": []}
starts = [e[1] for e in events] + [DURATION]
for i, (name, start, undone, end, node) in enumerate(events):
    mine = [(t, ok) for t, ok, n in log if not node or n == node]
    during = [ok for t, ok in mine if start <= t < undone]
    # Until the next fault.
    until = starts[i + 1]
    back = [t for t, ok in mine if undone <= t < until and ok]
    fails_after = [t for t, ok in mine if undone <= t < until and not ok]
    report["faults"].append({
        "fault": name,
        "lasted_s": round(undone - start, 3),
        "requests_during": len(during),
        "error_rate_during": round(1 - sum(during) / len(during), 4) if during else None,
        # From the undo (node started, Redis started) to its requests succeeding again, and
        # the last failure after the undo.
        "first_success_after_undo_s": round(back[0] - undone, 3) if back else None,
        "last_failure_after_undo_s": round(fails_after[-1] - undone, 3) if fails_after else 0.0,
        "undo_command_s": round(end - undone, 3),
    })
baseline = [ok for t, ok, _ in log if t < faults[0][1]]
report["error_rate_before_faults"] = round(1 - sum(baseline) / len(baseline), 4) if baseline else None

s = requests.Session()
lost = []
for card, pan in acked.items():
    for node in NODES:
        g = s.get(f"{node}/v1/cards/{card}", headers=H, timeout=10, verify=CA)
        if g.status_code != 200 or g.json().get("masked_number") != "XXXX" + pan[-4:]:
            lost.append((card, node, g.status_code))
report["lost_or_wrong"] = len(lost)


def stored(pans):
    """How many of these numbers the vault already holds (a repeat tokenization answers 200)."""
    held = 0
    for pan in pans:
        r = s.post(f"{NODES[0]}/v1/cards", headers=H, timeout=10, verify=CA,
                   json={"number": pan, "exp_month": 12, "exp_year": 2031})
        if r.status_code == 200:
            held += 1
    return held


report["refused_but_stored"] = stored(refused)
# Requests that got no answer (refused connections to a killed node, or cut in flight) may or
# may not have been stored; the client cannot know, and this is only reported.
report["unanswered_but_stored"] = stored(unanswered)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    with deliv_lock:
        missing = [card for card in acked if card not in delivered]
    if not missing:
        break
    time.sleep(1)
report["events_undelivered"] = len(missing)
json.dump(report, open(OUT, "w"), indent=2)
print(json.dumps(report, indent=2))
ok = not lost and not missing and report["refused_but_stored"] == 0
sys.exit(0 if ok else 1)
