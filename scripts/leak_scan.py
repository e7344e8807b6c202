#!/usr/bin/env python3
"""Fails if any test card number (in any spacing), any Luhn-valid 12-19 digit run, a
key, a bearer JWT, an OTP code or a CVC appears in what the server logged during the test
suite."""
import re
import sys

TEST_PANS = [
    "4242424242424242", "4111111111111111", "5555555555554444", "2223003122003222",
    "378282246310005", "6011111111111117", "3566002020360505", "36227206271667",
    "6200000000000005", "4000000000000002", "4532015112830366",
]


def luhn(d: str) -> bool:
    s = 0
    for i, c in enumerate(reversed(d)):
        v = int(c)
        if i % 2:
            v *= 2
            if v > 9:
                v -= 9
        s += v
    return s % 10 == 0


def main(path: str, *more: str) -> int:
    """Scans one file, or several (the canary test passes audit records, events,
    error bodies and metrics as well as the log)."""
    text = ""
    for p in (path, *more):
        try:
            text += open(p, encoding="utf-8", errors="replace").read()
        except FileNotFoundError:
            print(f"leak scan: no file at {p}")
            return 1
    lines = text.count("\n")
    if lines == 0:
        print("leak scan: the log is empty; the suite did not run the server")
        return 1
    squashed = re.sub(r"[ -]", "", text)
    hits = [p for p in TEST_PANS if p in squashed]
    # Any Luhn-valid 12-19 digit run standing alone (not inside an id or a hex string).
    for m in re.finditer(r"(?<![\w.])(?:\d[ -]?){11,18}\d(?![\w.])", text):
        digits = re.sub(r"[ -]", "", m.group())
        if 12 <= len(digits) <= 19 and luhn(digits):
            hits.append(digits[:6] + "…")
    for prefix in ("sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_", "sk_admin_", "whsec_"):
        for m in re.finditer(re.escape(prefix) + r"[A-Za-z0-9]{8,}", text):
            hits.append(prefix + "…")
    # A client session's secret (its session id alone is no secret).
    for m in re.finditer(r"cs_[0-9a-f]{32}_secret_[A-Za-z0-9_-]{8,}", text):
        hits.append("client secret")
    # A PIN in a JSON field or a key=value pair (PINs have no prefix to look for).
    for m in re.finditer(r'\bpin\\?"?\s*[:=]\s*\\?"?\d{4,12}\b', text, re.IGNORECASE):
        hits.append("pin=…")
    # Bearer JWTs (base64url JSON header and payload: both start `eyJ`).
    for m in re.finditer(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}", text):
        hits.append("jwt " + m.group()[:6] + "…")
    # An OTP code: six digits as the value of a JSON key "code" or "test_code" (also in
    # escaped JSON). Other six-digit numbers are not codes.
    for m in re.finditer(r'\\?"(?:test_)?code\\?"\s*:\s*\\?"\d{6}\\?"', text):
        hits.append("otp code")
    # A CVC: 3 or 4 digits as the value of a JSON key "cvc", "cvv", "cvc2" or "csc" (also
    # in escaped JSON, or unquoted), or of such a key=value pair.
    cvc = r'\\?"(?:cvc2?|cvv|csc)\\?"\s*:\s*\\?"?\d{3,4}(?!\d)|\b(?:cvc2?|cvv|csc)=\d{3,4}(?!\d)'
    for m in re.finditer(cvc, text, re.IGNORECASE):
        hits.append("cvc")
    if hits:
        print(f"leak scan: FAILED, {len(hits)} secret-shaped strings in {lines} log lines: {sorted(set(hits))}")
        return 1
    print(f"leak scan: {lines} log lines, no card number or key found")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
