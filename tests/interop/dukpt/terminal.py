"""The terminal side of TDES-DUKPT, from an independent implementation (pydukpt, written
from ANSI X9.24-1:2009 Annex A; pycryptodome's DES3), and the processor side of PIN
blocks (pycryptodome and pydukpt for ISO 9564 format 0, psec for format 4): what a
card-present terminal sends, and what a processor reads under its zone PIN key. Used by
the server's integration tests (terminals.rs).

    terminal.py data BDK_HEX KSN_HEX PLAINTEXT_HEX   -> hex of TDES-CBC (zero IV) under
                                                       the transaction's data key
    terminal.py pin  BDK_HEX KSN_HEX PIN PAN         -> hex of the ISO 9564 format 0 PIN
                                                       block under its PIN key
    terminal.py iso4-encipher KEY_HEX PIN PAN        -> a format 4 block under an AES key
    terminal.py iso0-decipher KEY_HEX BLOCK_HEX PAN  -> the PIN in a format 0 block under a
                                                       TDES key
    terminal.py iso4-decipher KEY_HEX BLOCK_HEX PAN  -> the PIN in a format 4 block
"""

import sys

from Crypto.Cipher import DES3
import psec.pinblock
import pydukpt


def main() -> None:
    mode = sys.argv[1]
    if mode == "iso4-encipher":
        block = psec.pinblock.encipher_pinblock_iso_4(
            bytes.fromhex(sys.argv[2]), sys.argv[3], sys.argv[4]
        )
        print(block.hex().upper())
        return
    if mode == "iso0-decipher":
        key = bytes.fromhex(sys.argv[2])
        clear = DES3.new(key, DES3.MODE_ECB).decrypt(bytes.fromhex(sys.argv[3]))
        print(pydukpt.decode_pin_block(clear, sys.argv[4]))
        return
    if mode == "iso4-decipher":
        key, block = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
        print(psec.pinblock.decipher_pinblock_iso_4(key, block, sys.argv[4]))
        return
    bdk, ksn = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
    key = pydukpt.derive_key(pydukpt.derive_ipek(bdk, ksn), ksn)
    if mode == "data":
        clear = bytes.fromhex(sys.argv[4])
        data_key = pydukpt.data_request_key(key)
        out = DES3.new(data_key, DES3.MODE_CBC, iv=bytes(8)).encrypt(clear)
    elif mode == "pin":
        out = pydukpt.encrypt_pin(key, sys.argv[4], sys.argv[5])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(out.hex().upper())


if __name__ == "__main__":
    main()
