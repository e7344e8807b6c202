#!/usr/bin/env python3
"""Interop check: an independent JWT library (PyJWT + cryptography) fetches our JWKS and
verifies an access token we issued, and refuses the same token tampered with.

usage: verify.py BASE_URL CA_PEM TOKEN AUDIENCE ISSUER
Prints the verified claims as JSON on success; exits non-zero with a message otherwise.
Run from the Rust integration tests (crates/server/tests/it/tokens.rs).
"""
import json
import ssl
import sys
import urllib.request

try:
    import jwt  # PyJWT
    from jwt import PyJWKSet
    import cryptography  # noqa: F401  (PyJWT needs it for EdDSA and RS256)
except ImportError as e:
    print(f"interop: PyJWT and cryptography are required (pip install PyJWT cryptography): {e}",
          file=sys.stderr)
    sys.exit(2)


def main() -> int:
    base, ca, token, audience, issuer = sys.argv[1:6]
    ctx = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(base + "/.well-known/jwks.json", context=ctx) as r:
        jwks = json.load(r)
    keys = {k.key_id: k for k in PyJWKSet.from_dict(jwks).keys}
    header = jwt.get_unverified_header(token)
    if header.get("alg") not in ("EdDSA", "RS256"):
        print(f"interop: unexpected alg {header.get('alg')}", file=sys.stderr)
        return 1
    key = keys.get(header.get("kid"))
    if key is None:
        print("interop: the token's kid is not in the JWKS", file=sys.stderr)
        return 1
    claims = jwt.decode(
        token,
        key=key.key,
        algorithms=[header["alg"]],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]},
    )
    for name in ("acct", "mode", "scope"):
        if name not in claims:
            print(f"interop: claim {name} missing", file=sys.stderr)
            return 1
    # The same token with one changed byte in the payload must not verify.
    h, p, s = token.split(".")
    tampered = ".".join([h, p[:-2] + ("A" if p[-2] != "A" else "B") + p[-1], s])
    try:
        jwt.decode(tampered, key=key.key, algorithms=[header["alg"]], audience=audience, issuer=issuer)
    except jwt.InvalidTokenError:
        pass
    else:
        print("interop: a tampered token verified", file=sys.stderr)
        return 1
    # And a wrong audience must not verify either.
    try:
        jwt.decode(token, key=key.key, algorithms=[header["alg"]], audience="someone-else", issuer=issuer)
    except jwt.InvalidAudienceError:
        pass
    else:
        print("interop: a wrong audience verified", file=sys.stderr)
        return 1
    print(json.dumps({"alg": header["alg"], "kid": header["kid"], "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
