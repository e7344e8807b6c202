#!/usr/bin/env python3
"""Writes a small MaxMind-format database with mmdb-writer, a writer independent of
Strongroom, so that the server's IP country reader is tested against a file it did not
make. Records are shaped like MaxMind's GeoLite2-Country ({"country": {"iso_code": ..}}).

usage: make_mmdb.py PATH [country|asn]

`asn` writes a GeoLite2-ASN-like database instead, which the reader must refuse.
"""
import sys

try:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet
except ImportError:
    print(
        "mmdb-writer is not installed: pip install -r tests/interop/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(2)

COUNTRY_NETWORKS = [
    ("81.2.69.0/24", "GB"),
    ("2.125.160.0/24", "GB"),
    ("89.160.20.0/24", "SE"),
    ("216.160.83.0/24", "US"),
    ("2a02:8100::/32", "DE"),
]

ASN_NETWORKS = [
    ("81.2.69.0/24", 20712),
    ("2a02:8100::/32", 3209),
]


def main() -> None:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    path = sys.argv[1]
    kind = sys.argv[2] if len(sys.argv) == 3 else "country"
    if kind == "country":
        database_type = "GeoLite2-Country"
        rows = [(net, {"country": {"iso_code": iso}}) for net, iso in COUNTRY_NETWORKS]
    elif kind == "asn":
        database_type = "GeoLite2-ASN"
        rows = [(net, {"autonomous_system_number": asn}) for net, asn in ASN_NETWORKS]
    else:
        print(f"unknown kind {kind!r}: country or asn", file=sys.stderr)
        sys.exit(2)

    # An IPv6 tree holding IPv4 at ::/96, as MaxMind's own files do.
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description={"en": "Strongroom interop test database"},
    )
    for net, record in rows:
        writer.insert_network(IPSet([net]), record)
    writer.to_db_file(path)


if __name__ == "__main__":
    main()
