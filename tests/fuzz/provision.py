"""Provisioning for `scripts/fuzz-api`: keys and objects for the passes.

Reads the dev vault's `dev.json`, makes with the admin key a live secret key for the dev
account (the account's security settings take a live key) and two more accounts whose
settings the fuzzer may lock itself out of, and a few objects whose ids the hooks use as
path parameters. Prints one JSON object: {pass name: {"key", "ids", "include"}}.
"""

import json
import sys

import requests


def main(dev_json_path):
    with open(dev_json_path, encoding="utf-8") as f:
        dev = json.load(f)
    url, ca = dev["url"], dev["ca_cert"]

    def call(method, path, key, body=None, ok=(200, 201)):
        r = requests.request(
            method,
            url + path,
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            verify=ca,
            timeout=10,
        )
        if r.status_code not in ok:
            sys.exit(f"provision: {method} {path} -> {r.status_code} {r.text[:200]}")
        return r.json()

    admin, test = dev["admin_key"], dev["secret_key"]
    account = dev["account_id"]

    def live_key(account_id):
        body = {"kind": "secret", "mode": "live"}
        return call("POST", f"/v1/admin/accounts/{account_id}/api_keys", admin, body)["secret"]

    def new_account(name):
        return call("POST", "/v1/admin/accounts", admin, {"name": name})["id"]

    live = live_key(account)
    # An account the admin pass may change (rate limit, keys) without touching the others.
    target = new_account("fuzz admin target")
    target_key = call(
        "POST", f"/v1/admin/accounts/{target}/api_keys", admin, {"kind": "secret", "mode": "test"}
    )["id"]

    card = call(
        "POST", "/v1/cards", test, {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040}
    )
    card_id = card.get("id") or card.get("card", {}).get("id")
    endpoint = call(
        "POST",
        "/v1/webhook_endpoints",
        test,
        {"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"]},
        ok=(200, 201, 400),
    ).get("id")
    events = call("GET", "/v1/events?limit=1", test).get("data", [])
    event_id = events[0]["id"] if events else None

    test_ids = {}
    if card_id:
        for p in ["/v1/cards/{id}", "/v1/cards/{id}/reveal", "/v1/cards/{id}/pin",
                  "/v1/cards/{id}/pin/verify", "/v1/cards/{id}/pin/change"]:
            test_ids[p] = {"id": card_id}
    if endpoint:
        for p in ["/v1/webhook_endpoints/{id}", "/v1/webhook_endpoints/{id}/attempts",
                  "/v1/webhook_endpoints/{id}/disable", "/v1/webhook_endpoints/{id}/enable",
                  "/v1/webhook_endpoints/{id}/rotate_secret", "/v1/webhook_endpoints/{id}/recover"]:
            test_ids[p] = {"id": endpoint}
    if event_id:
        for p in ["/v1/events/{id}", "/v1/events/{id}/deliveries", "/v1/events/{id}/redeliver"]:
            test_ids[p] = {"id": event_id}
    admin_ids = {
        p: {"id": target}
        for p in ["/v1/admin/accounts/{id}", "/v1/admin/accounts/{id}/api_keys",
                  "/v1/admin/accounts/{id}/keys", "/v1/admin/accounts/{id}/keys/rotate",
                  "/v1/admin/accounts/{id}/keys/retire", "/v1/admin/accounts/{id}/pin_settings",
                  "/v1/admin/accounts/{id}/revoke_all",
                  "/v1/admin/accounts/{id}/otp_signing_secret/rotate"]
    }
    admin_ids["/v1/admin/accounts/{id}/api_keys/{key_id}"] = {"id": target, "key_id": target_key}
    if card_id:
        admin_ids["/v1/admin/cards/{id}/pin/unlock"] = {"id": card_id}

    # Settings that can lock the caller out (an allowlist without this address, a
    # signature requirement) each get an account of their own, fuzzed last.
    lockout = {
        "live-allowlist": "PUT /v1/ip_allowlist",
        "live-signatures": "PATCH /v1/account",
        "live-suspensions": "POST /v1/suspensions",
        "live-assessments": "POST /v1/risk/assessments",
        "live-rules": "PUT /v1/risk/rules",
        "live-lists": "POST /v1/risk/lists/{list}/entries",
    }
    # The browser pass: a publishable key posting cards through a session that takes many.
    session = call(
        "POST",
        "/v1/client_sessions",
        test,
        {"purpose": "tokenize", "allowed_origins": ["https://shop.example"], "max_cards": 100,
         "expires_in": 3600},
    )
    cards_path = "/v1/client_sessions/{id}/cards"
    passes = {
        "open": {"key": None, "ids": {}, "include": "^/(healthz|readyz|v1/openapi.json|\\.well-known/.*|v1/inbound/.*|v1/sys/(seal_status|unseal))$"},
        # Not /v1/sys: seal_status and unseal are the open pass's; seal and rotate_root take
        # an admin key and would seal or re-key the vault under the other passes, so no pass
        # fuzzes them (the integration tests cover their refusals).
        "test": {"key": test, "ids": test_ids, "include": "^/v1/(?!admin/|inbound/|sys/)"},
        "live": {"key": live, "ids": {}, "include": "^/v1/(?!admin/|inbound/|sys/)"},
        "admin": {"key": admin, "ids": admin_ids, "include": "^/v1/admin/"},
        "browser": {"key": dev["publishable_key"], "ids": {cards_path: {"id": session["id"]}},
                    "bodies": {cards_path: {"client_secret": session["client_secret"]}},
                    "only": "POST " + cards_path},
    }
    for name, op in lockout.items():
        acct = new_account(f"fuzz {name}")
        passes[name] = {"key": live_key(acct), "ids": {}, "only": op}
    json.dump(passes, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
