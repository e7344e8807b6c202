#!/usr/bin/env python3
"""Independent PIN client for Strongroom, on jwcrypto (JWE) and the standard library.

Run by the Rust integration test `pin::python_client_end_to_end`:

    python3 client.py BASE_URL CA_PEM API_KEY CARD_ID OTHER_CARD_ID

It fetches the PIN transport JWK, encrypts PIN payloads with jwcrypto, and checks the
whole contract: set with an OTP, verify right and wrong, the third wrong PIN locks, the
right PIN is then refused with pin_locked, an OTP reset unlocks; a replayed payload, a
payload for another card, a stale iat and alg RSA1_5 are each refused. Exits non-zero
with a message on the first deviation; prints outcomes only, never a PIN.
"""

import json
import ssl
import sys
import time
import uuid
import urllib.error
import urllib.request

try:
    from jwcrypto import jwe, jwk
except ImportError:  # A missing tool must fail the test, never skip it.
    sys.exit("jwcrypto is not installed: pip install jwcrypto")

BASE, CA, KEY, CARD, OTHER = sys.argv[1:6]
CTX = ssl.create_default_context(cafile=CA)


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + KEY)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=CTX, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def expect(what, got, status, code=None):
    st, body = got
    if st != status or (code is not None and body.get("error", {}).get("code") != code):
        sys.exit(f"FAIL {what}: expected {status} {code or ''}, got {st} {body}")
    print(f"ok   {what}")
    return body


st, pub = call("GET", "/v1/pin/encryption_key")
if st != 200 or pub.get("alg") != "RSA-OAEP-256" or pub.get("use") != "enc" or not pub.get("kid"):
    sys.exit(f"FAIL jwk: {st} {pub}")
KEY_JWK = jwk.JWK(**{k: pub[k] for k in ("kty", "n", "e", "kid")})
if KEY_JWK.export_public(as_dict=True)["kty"] != "RSA" or len(jwk.base64url_decode(pub["n"])) != 384:
    sys.exit("FAIL jwk is not RSA-3072")
print("ok   fetched the RSA-3072 JWK")


def payload(pin, card=CARD, iat=None, jti=None, alg="RSA-OAEP-256", enc="A256GCM"):
    claims = {
        "pin": pin,
        "card": card,
        "iat": int(time.time()) if iat is None else iat,
        "jti": jti or uuid.uuid4().hex,
    }
    header = {"alg": alg, "enc": enc, "kid": pub["kid"]}
    token = jwe.JWE(json.dumps(claims).encode(), json.dumps(header), algs=[alg, enc])
    token.add_recipient(KEY_JWK)
    return token.serialize(compact=True)


def otp(purpose, card=CARD):
    st, body = call("POST", "/v1/otp", {"purpose": purpose, "card": card})
    if st != 201:
        sys.exit(f"FAIL otp {purpose}: {st} {body}")
    return body["id"], body["test_code"]


def set_pin(pin, purpose="pin.set", enc_pin=None):
    oid, code = otp(purpose)
    return call("PUT", f"/v1/cards/{CARD}/pin",
                {"encrypted_pin": enc_pin or payload(pin), "otp": oid, "code": code})


def verify(enc_pin):
    return call("POST", f"/v1/cards/{CARD}/pin/verify", {"encrypted_pin": enc_pin})


RIGHT, WRONG, NEXT = "5803", "5804", "730291"

expect("set the PIN with a pin.set OTP", set_pin(RIGHT), 200)
body = expect("verify the right PIN", verify(payload(RIGHT)), 200)
assert body == {"match": True}, body
captured = payload(RIGHT)
expect("verify once more", verify(captured), 200)
expect("a captured payload replayed is refused", verify(captured), 409, "pin_payload_replayed")
expect("a payload for another card is refused", verify(payload(RIGHT, card=OTHER)), 400,
       "pin_payload_card_mismatch")
expect("a stale iat is refused", verify(payload(RIGHT, iat=int(time.time()) - 301)), 400,
       "pin_payload_stale")
expect("an iat in the future is refused", verify(payload(RIGHT, iat=int(time.time()) + 120)), 400,
       "pin_payload_stale")
expect("alg RSA1_5 is refused", verify(payload(RIGHT, alg="RSA1_5")), 400,
       "pin_payload_unsupported")
expect("a 3-digit PIN is refused", verify(payload("123")), 400, "pin_length")
for n in (1, 2):
    body = expect(f"wrong PIN #{n}", verify(payload(WRONG)), 200)
    assert body == {"match": False}, body
body = expect("a right PIN resets the counter", verify(payload(RIGHT)), 200)
assert body == {"match": True}, body
for n in (1, 2, 3):
    body = expect(f"wrong PIN #{n} after the reset", verify(payload(WRONG)), 200)
    assert body == {"match": False}, body
expect("the right PIN is refused once locked", verify(payload(RIGHT)), 423, "pin_locked")
expect("set with pin.set is refused once locked", set_pin(NEXT), 423, "pin_locked")
expect("a trivial PIN is refused on reset", set_pin("1234", "pin.reset"), 400, "pin_too_weak")
expect("an OTP reset sets a new PIN and unlocks", set_pin(NEXT, "pin.reset"), 200)
body = expect("the new PIN verifies", verify(payload(NEXT)), 200)
assert body == {"match": True}, body
body = expect("the old PIN no longer does", verify(payload(RIGHT)), 200)
assert body == {"match": False}, body

oid, code = otp("pin.change")
expect("change with the current PIN and a pin.change OTP",
       call("POST", f"/v1/cards/{CARD}/pin/change",
            {"encrypted_current_pin": payload(NEXT), "encrypted_new_pin": payload(RIGHT),
             "otp": oid, "code": code}), 200)
body = expect("the changed PIN verifies", verify(payload(RIGHT)), 200)
assert body == {"match": True}, body
print("PASS")
