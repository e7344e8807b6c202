#!/usr/bin/env python3
"""Verifies a webhook Strongroom delivered: `v1` with the public `standardwebhooks`
package, `v1a` with the Ed25519 public key and the `cryptography` package, per the spec.

Usage: verify.py MESSAGE.json, where the file holds {secret | public_key, id, timestamp,
signature, body}: the endpoint's whsec_ secret (or whpk_ key) and exactly what the receiver
got. Exits 0 when the real message verifies and a flipped byte and a stale timestamp are
both refused.
"""
import base64
import json
import sys
import time

try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError:
    print("FAIL: the Python package `standardwebhooks` is not installed (pip install standardwebhooks)")
    sys.exit(2)


class Ed25519Verifier:
    """`v1a` per the Standard Webhooks spec: Ed25519 over `{id}.{timestamp}.{body}`,
    timestamps within 5 minutes."""

    def __init__(self, whpk: str):
        try:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        except ImportError:
            print("FAIL: the Python package `cryptography` is not installed (pip install cryptography)")
            sys.exit(2)
        self.key = Ed25519PublicKey.from_public_bytes(base64.b64decode(whpk.removeprefix("whpk_")))

    def verify(self, body: bytes, headers: dict) -> None:
        from cryptography.exceptions import InvalidSignature
        ts = int(headers["webhook-timestamp"])
        if abs(time.time() - ts) > 300:
            raise WebhookVerificationError("stale")
        content = f"{headers['webhook-id']}.{ts}.".encode() + body
        for entry in headers["webhook-signature"].split(" "):
            version, _, sig = entry.partition(",")
            if version != "v1a":
                continue
            try:
                self.key.verify(base64.b64decode(sig), content)
                return
            except InvalidSignature:
                pass
        raise WebhookVerificationError("no matching v1a signature")


def main(path: str) -> int:
    m = json.load(open(path, encoding="utf-8"))
    wh = Ed25519Verifier(m["public_key"]) if m.get("public_key") else Webhook(m["secret"])
    headers = {"webhook-id": m["id"], "webhook-timestamp": str(m["timestamp"]), "webhook-signature": m["signature"]}
    body = m["body"].encode()
    wh.verify(body, headers)  # raises if it does not verify

    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0x01
    try:
        wh.verify(bytes(flipped), headers)
        print("FAIL: a flipped byte verified")
        return 1
    except WebhookVerificationError:
        pass

    stale = dict(headers, **{"webhook-timestamp": str(int(time.time()) - 3600)})
    try:
        wh.verify(body, stale)
        print("FAIL: a stale timestamp verified")
        return 1
    except WebhookVerificationError:
        pass
    print("python " + ("ed25519 v1a" if m.get("public_key") else "standardwebhooks v1") + ": OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
