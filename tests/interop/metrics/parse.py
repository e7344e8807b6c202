#!/usr/bin/env python3
"""Fetches Strongroom's /metrics and parses it with the reference Prometheus text parser
(prometheus_client). Fails on a parse error, a missing family, or a label value that
could be sensitive or high-cardinality. Prints a JSON summary of the samples on stdout.

usage: parse.py METRICS_URL
"""
import json
import re
import sys
import urllib.request

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("prometheus_client is not installed: pip install prometheus_client", file=sys.stderr)
    sys.exit(2)

EXPECTED = {
    "strongroom_http_requests": "counter",
    "strongroom_http_request_duration_seconds": "histogram",
    "strongroom_rate_limit_refusals": "counter",
    "strongroom_webhook_queue_depth": "gauge",
    "strongroom_webhook_queue_oldest_age_seconds": "gauge",
    "strongroom_audit_chain_length": "gauge",
    "strongroom_audit_last_checkpoint_age_seconds": "gauge",
    "strongroom_audit_unavailable": "counter",
    "strongroom_rewrap_records": "counter",
    "strongroom_data_key_versions": "gauge",
    "strongroom_rewrap_pending_records": "gauge",
    "strongroom_risk_assessments": "counter",
    "strongroom_redis_degraded": "gauge",
    "strongroom_redis_fallbacks": "counter",
}
# action, decision, stored: risk assessments (a closed set of each); feature: the
# Redis-backed features that can degrade (rate_limit, velocity).
ALLOWED_LABELS = {"method", "route", "status", "le", "purpose", "state", "action", "decision",
                  "stored", "feature"}
SENSITIVE = [
    re.compile(r"(card|acct|key|otp|req|evt|we)_[0-9a-f]{8,}"),
    re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"),
    re.compile(r"\d{12,}"),
    re.compile(r"(sk|rk|pk|whsec)_"),
]


def main(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    if not ctype.startswith("text/plain"):
        print(f"unexpected content type {ctype!r}", file=sys.stderr)
        return 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    errors = []
    for name, kind in EXPECTED.items():
        f = families.get(name)
        if f is None:
            errors.append(f"missing family {name}")
        elif f.type != kind:
            errors.append(f"{name} is a {f.type}, expected {kind}")
    samples = []
    for f in families.values():
        for s in f.samples:
            for k, v in s.labels.items():
                if k not in ALLOWED_LABELS:
                    errors.append(f"{s.name} has label {k}")
                if any(p.search(v) for p in SENSITIVE):
                    errors.append(f"{s.name} has a sensitive-looking label value")
            samples.append({"name": s.name, "labels": s.labels, "value": s.value})
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    print(json.dumps(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
