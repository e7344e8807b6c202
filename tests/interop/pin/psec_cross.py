#!/usr/bin/env python3
"""Cross-check of ISO 9564-1 format 4 PIN blocks against psec, an independent
implementation. Run by `crates/crypto/tests/psec.rs`:

    python3 psec_cross.py IN.json OUT.json

IN.json is a list of {"key", "pan", "pin", "block"} (hex key and block) that Strongroom
produced. For each, OUT.json gets {"deciphered": psec's reading of Strongroom's block,
"psec_block": a block psec enciphered for the same key, PIN and PAN}.
"""

import json
import sys

try:
    from psec import pinblock
except ImportError:  # A missing tool must fail the test, never skip it.
    sys.exit("psec is not installed: pip install psec")

src, dst = sys.argv[1:3]
out = []
for case in json.load(open(src)):
    key = bytes.fromhex(case["key"])
    out.append({
        "deciphered": pinblock.decipher_pinblock_iso_4(key, bytes.fromhex(case["block"]), case["pan"]),
        "psec_block": pinblock.encipher_pinblock_iso_4(key, case["pin"], case["pan"]).hex(),
    })
json.dump(out, open(dst, "w"))
