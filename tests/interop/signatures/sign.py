#!/usr/bin/env python3
"""RFC 9421 interop: requests signed by the independent `http-message-signatures`
library (Ed25519) against a running Strongroom.

Usage: sign.py URL CA_PEM SECRET_KEY LIVE_SECRET_KEY

Registers a fresh Ed25519 public key (PEM) with POST /v1/signing_keys (signing keys and
the account's settings protect live traffic, so they are changed with the live key; the
requests themselves use the test key), then checks:
a correctly signed POST with a body and a signed GET are accepted; the same request with
one changed body byte, a changed signed header, a stale `created`, a replayed nonce, or
a revoked key is refused with the right code; a JWK registration works too; once the
account requires signatures, each must carry a nonce and cover `authorization`. Prints one
JSON line per check and exits non-zero on the first mismatch.
"""

import base64
import datetime
import json
import secrets
import sys

try:
    import requests
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms
except ImportError as e:  # the Rust test turns this into a failure with this message
    print(f"missing Python package: {e.name}; run: pip install http-message-signatures requests cryptography", file=sys.stderr)
    sys.exit(3)

URL, CA, SK, LIVE = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]


class Keys(HTTPSignatureKeyResolver):
    def __init__(self):
        self.keys = {}

    def resolve_private_key(self, key_id):
        return self.keys[key_id]

    def resolve_public_key(self, key_id):
        return self.keys[key_id].public_key()


resolver = Keys()
signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=resolver)
session = requests.Session()
session.verify = CA
# Only the given CA and no proxy: the environment must not change what is tested.
session.trust_env = False


def check(name, resp, status, code=None):
    body = {}
    try:
        body = resp.json()
    except ValueError:
        pass
    got_code = body.get("error", {}).get("code") if isinstance(body, dict) else None
    ok = resp.status_code == status and (code is None or got_code == code)
    print(json.dumps({"check": name, "status": resp.status_code, "code": got_code, "ok": ok}))
    if not ok:
        sys.exit(1)
    return body


def register(payload):
    r = session.post(f"{URL}/v1/signing_keys", json=payload, headers={"Authorization": f"Bearer {LIVE}"})
    return check("register " + next(iter(payload)), r, 201)["id"]


def prepare(method, path, body=None, key=None):
    headers = {"Authorization": f"Bearer {key or SK}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    req = requests.Request(method, f"{URL}{path}", headers=headers, data=body)
    return session.prepare_request(req)


def sign(prep, key_id, created=None, nonce=None, components=("@method", "@target-uri", "authorization")):
    signer.sign(
        prep,
        key_id=key_id,
        created=created or datetime.datetime.now(datetime.timezone.utc),
        nonce=nonce,
        label="sig1",
        covered_component_ids=components,
        body=prep.body if prep.body else None,
    )
    return prep


priv = Ed25519PrivateKey.generate()
pem = priv.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
kid = register({"pem": pem})
resolver.keys[kid] = priv

card = json.dumps({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030}).encode()

# 1. A good signed POST (Content-Digest added and covered by the library).
p = sign(prepare("POST", "/v1/cards", card), kid)
assert "content-digest" in p.headers["Signature-Input"], p.headers["Signature-Input"]
check("signed POST accepted", session.send(p), 201)

# 2. A signed GET with a query (the query is part of @target-uri).
check("signed GET accepted", session.send(sign(prepare("GET", "/v1/cards?limit=1"), kid)), 200)

# 3. One changed byte of the body after signing: the digest no longer matches.
p = sign(prepare("POST", "/v1/cards", card), kid)
p.body = p.body.replace(b"2030", b"2031")
check("changed body byte refused", session.send(p), 401, "content_digest_mismatch")

# 4. One changed byte of the signed path: the signature no longer verifies.
p = sign(prepare("GET", "/v1/cards?limit=1"), kid)
p.url = p.url.replace("limit=1", "limit=2")
check("changed target refused", session.send(p), 401, "signature_invalid")

# 5. One changed byte of the signature itself.
p = sign(prepare("GET", "/v1/cards?limit=1"), kid)
label, value = p.headers["Signature"].split("=", 1)
raw = bytearray(base64.b64decode(value.strip(":")))
raw[0] ^= 1
p.headers["Signature"] = f"{label}=:{base64.b64encode(bytes(raw)).decode()}:"
check("changed signature byte refused", session.send(p), 401, "signature_invalid")

# 6. A stale `created` (10 minutes ago; the window is 300 s).
stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=600)
check("stale created refused", session.send(sign(prepare("GET", "/v1/cards?limit=1"), kid, created=stale)), 401, "signature_expired")

# 7. A nonce is accepted once; the identical request replayed is refused.
nonce = secrets.token_urlsafe(16)
p = sign(prepare("GET", "/v1/cards?limit=1"), kid, nonce=nonce)
check("nonce first use accepted", session.send(p), 200)
check("replayed nonce refused", session.send(p), 401, "signature_invalid")

# 8. A signature that does not cover the method and target is refused.
check("missing coverage refused", session.send(sign(prepare("GET", "/v1/cards?limit=1"), kid, components=("authorization",))), 401, "signature_invalid")

# 8b. @authority + @path + @query instead of @target-uri; the query must be covered.
check("authority/path/query accepted", session.send(sign(prepare("GET", "/v1/cards?limit=1"), kid, components=("@method", "@authority", "@path", "@query"))), 200)
check("uncovered query refused", session.send(sign(prepare("GET", "/v1/cards?limit=1"), kid, components=("@method", "@authority", "@path"))), 401, "signature_invalid")

# 8c. A body whose digest is not covered by the signature.
p = prepare("POST", "/v1/cards", card)
signer.sign(p, key_id=kid, created=datetime.datetime.now(datetime.timezone.utc), label="sig1",
            covered_component_ids=("@method", "@target-uri"))
check("uncovered body refused", session.send(p), 401, "signature_invalid")

# 8d. An `expires` in the past.
now = datetime.datetime.now(datetime.timezone.utc)
p = prepare("GET", "/v1/cards?limit=1")
signer.sign(p, key_id=kid, created=now - datetime.timedelta(seconds=20), expires=now - datetime.timedelta(seconds=10),
            label="sig1", covered_component_ids=("@method", "@target-uri"))
check("passed expires refused", session.send(p), 401, "signature_expired")

# 9. A JWK registration; then revoke it and its signatures fail.
priv2 = Ed25519PrivateKey.generate()
raw_pub = priv2.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
x = base64.urlsafe_b64encode(raw_pub).rstrip(b"=").decode()
kid2 = register({"jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}})
resolver.keys[kid2] = priv2
check("JWK key accepted", session.send(sign(prepare("GET", "/v1/cards?limit=1"), kid2)), 200)
r = session.delete(f"{URL}/v1/signing_keys/{kid2}", headers={"Authorization": f"Bearer {LIVE}"})
check("revoke", r, 200)
check("revoked key refused", session.send(sign(prepare("GET", "/v1/cards?limit=1"), kid2)), 401, "signature_invalid")

# 10. Require signatures: unsigned refused; a signature without a nonce (replayable for
# the whole window) or one that does not cover `authorization` (re-sendable with another
# credential) refused; one with both accepted, once.
p = sign(prepare("PATCH", "/v1/account", json.dumps({"require_signed_requests": True}).encode(), key=LIVE), kid)
check("require signed requests", session.send(p), 200)
check("unsigned refused", session.get(f"{URL}/v1/cards?limit=1", headers={"Authorization": f"Bearer {SK}"}), 401, "signature_missing")
check("no nonce refused", session.send(sign(prepare("GET", "/v1/cards?limit=1"), kid)), 401, "signature_invalid")
check("authorization not covered refused", session.send(sign(prepare("GET", "/v1/cards?limit=1"), kid, nonce=secrets.token_urlsafe(16), components=("@method", "@target-uri"))), 401, "signature_invalid")
p = sign(prepare("GET", "/v1/cards?limit=1"), kid, nonce=secrets.token_urlsafe(16))
check("signed with nonce and authorization accepted", session.send(p), 200)
check("required: replay refused", session.send(p), 401, "signature_invalid")
# Unset it again, signed (it is required until then).
p = sign(prepare("PATCH", "/v1/account", json.dumps({"require_signed_requests": False}).encode(), key=LIVE), kid, nonce=secrets.token_urlsafe(16))
check("signatures no longer required", session.send(p), 200)
print(json.dumps({"done": True}))
