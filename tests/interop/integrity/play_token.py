#!/usr/bin/env python3
"""Independent Play Integrity token builder, on jwcrypto.

Builds tokens the way Google Play builds them for an app that chose "decrypt and verify
locally" (https://developer.android.com/google/play/integrity/classic#decrypt-verify-locally):
a compact JWS, ES256, of the verdict JSON, nested in a compact JWE, A256KW + A256GCM,
under the app's decryption key.

    python3 play_token.py keys
        prints {"decryption_key", "verification_key", "signing_key_pem"}: the first two
        as the Play Console shows them (base64 of 32 random bytes; base64 of the DER
        SubjectPublicKeyInfo of a new P-256 key), the third its PKCS#8 PEM private key.
    python3 play_token.py token DECRYPTION_KEY_B64 SIGNING_KEY_PEM_FILE < payload.json
        prints the compact JWE of the payload read on stdin.
"""

import base64
import json
import os
import sys

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwcrypto import jwe, jwk, jws
except ImportError:  # A missing tool must fail the test, never skip it.
    sys.exit("jwcrypto is not installed: pip install jwcrypto==1.6.1 cryptography==50.0.2")


def keys():
    signing = ec.generate_private_key(ec.SECP256R1())
    spki = signing.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = signing.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    print(json.dumps({
        "decryption_key": base64.b64encode(os.urandom(32)).decode(),
        "verification_key": base64.b64encode(spki).decode(),
        "signing_key_pem": pem.decode(),
    }))


def token(decryption_b64, pem_file):
    payload = sys.stdin.buffer.read()
    json.loads(payload)  # The verdict is JSON; refuse to sign anything else.
    with open(pem_file, "rb") as f:
        signing = jwk.JWK.from_pem(f.read())
    inner = jws.JWS(payload)
    inner.add_signature(signing, alg="ES256", protected=json.dumps({"alg": "ES256"}))
    kek = jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(
        base64.b64decode(decryption_b64, validate=True)).rstrip(b"=").decode())
    outer = jwe.JWE(inner.serialize(compact=True).encode(),
                    protected=json.dumps({"alg": "A256KW", "enc": "A256GCM"}))
    outer.add_recipient(kek)
    print(outer.serialize(compact=True))


if __name__ == "__main__":
    if sys.argv[1:2] == ["keys"] and len(sys.argv) == 2:
        keys()
    elif sys.argv[1:2] == ["token"] and len(sys.argv) == 4:
        token(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
