"""Schemathesis hooks for `scripts/fuzz-api`.

- `positive_refusal_beyond_schema` replaces the built-in `positive_data_acceptance`:
  a schema-valid request may be refused with 400 only by a rule the operation names in
  `x-refused-beyond-schema` (a Luhn check, an expiry in the past, ...), with 422 only
  for a reused Idempotency-Key and with 423 only for a locked PIN (both depend on
  earlier requests, not on this one), and with 413 only for a body over the 64 KiB
  every body is held to. Anything else is a finding: the schema should have said so.
- Request-signature headers are left out of the document the fuzzer reads (and so of
  every phase): a generated signature is never valid, so with them nearly every request
  would stop at 401 (signatures have their own tests).
- Path parameters are sometimes the id of a real object made by `provision.py`, so that
  handlers are reached past their 404; body fields likewise (a client session's secret,
  so that the card route is reached past `client_session_invalid`).
"""

import json
import os

import jsonschema

import schemathesis
from hypothesis import strategies as st

try:
    from schemathesis.specs.openapi.checks import is_unexpected_http_status_case
except ImportError:  # pragma: no cover - other schemathesis versions

    def is_unexpected_http_status_case(case):
        return False


with open(os.environ["FUZZ_DOC"], encoding="utf-8") as f:
    DOC = json.load(f)

# Path template -> {parameter: real id}, written by provision.py for this pass.
IDS = json.loads(os.environ.get("FUZZ_IDS", "{}") or "{}")
# Path template -> {body field: real value} (a client secret), likewise.
BODIES = json.loads(os.environ.get("FUZZ_BODIES", "{}") or "{}")

# Every request body is held to this many bytes (`extract::BODY_LIMIT`), schema or not.
BODY_LIMIT = 64 * 1024

# Refusals that depend on earlier requests, never on the request itself.
STATEFUL = {422: {"idempotency_key_reused"}, 423: {"pin_locked"}}


def _operation(case):
    return DOC["paths"].get(case.operation.path, {}).get(case.operation.method.lower(), {})


def _error_code(response):
    try:
        return response.json()["error"]["code"]
    except Exception:  # noqa: BLE001 - not our error shape: the check reports it
        return None


# BIN tables (`PUT /v1/admin/risk/bin_table`, text/csv): rows that parse, rows that do not,
# and text of any kind, so that both the table and its refusal with a line are reached.
_BIN_ROW = st.tuples(
    st.from_regex(r"\A[0-9]{1,11}\Z"), st.from_regex(r"\A[A-Za-z]{2}\Z")
).map(lambda r: f"{r[0]},{r[1]}")
_CSV = st.one_of(
    st.lists(_BIN_ROW, min_size=1, max_size=20).map(lambda rows: "\n".join(rows) + "\n"),
    st.lists(st.one_of(_BIN_ROW, st.text(max_size=30)), max_size=20).map("\n".join),
).map(lambda t: t.encode("utf-8"))
schemathesis.openapi.media_type("text/csv", _CSV)


@schemathesis.check
def positive_refusal_beyond_schema(ctx, response, case):
    """Valid data is accepted unless a rule the schema cannot state refuses it."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if is_unexpected_http_status_case(case):
        return None
    status = response.status_code
    if status < 400 or status in (401, 403, 404, 409, 429) or status >= 500:
        # 5xx is `not_a_server_error`'s finding; 401/403/404/409/429 depend on
        # credentials and state.
        return None
    code = _error_code(response)
    if code in STATEFUL.get(status, ()):
        return None
    sent = getattr(response.request, "body", None) or b""
    if status == 413 and code == "body_too_large" and len(sent) > BODY_LIMIT:
        return None
    allowed = {r["code"] for r in _operation(case).get("x-refused-beyond-schema", [])}
    if status == 400 and code in allowed:
        return None
    raise AssertionError(
        f"Schema-valid request refused with {status} {code}; "
        f"the operation names {sorted(allowed) or 'no rule'} in x-refused-beyond-schema"
    )


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    real = IDS.get(context.operation.path) if context.operation else None
    if not real or not isinstance(path_parameters, dict):
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, **real}])


# Rule conditions that parse: random strings almost never do, so half the rule sets
# the fuzzer puts are made of these, to reach the store and the dry run behind the check.
_SIGNALS = ["card_uses_10m", "ip_distinct_cards_10m", "amount", "hour", "amount_vs_card_mean"]
_CONDITIONS = st.one_of(
    st.builds(
        "{} {} {}".format,
        st.sampled_from(_SIGNALS),
        st.sampled_from([">", ">=", "<", "==", "!="]),
        st.integers(min_value=-10, max_value=10**6),
    ),
    st.sampled_from(
        ['action == "payment"', "bin_ip_country_mismatch", "suspended || allow_listed",
         "max(card_uses_24h, ip_uses_1m) >= 3 && !allow_listed"]
    ),
)
_ACTIONS = st.one_of(
    st.none(),
    st.sampled_from([{"type": "review"}, {"type": "block"}]),
    st.builds(
        lambda t, d: {"type": "suspend", "target": t, "duration": d},
        st.sampled_from(["ip", "network", "card", "email", "device_id"]),
        st.integers(min_value=60, max_value=7_776_000),
    ),
)
_RULES = st.lists(
    st.fixed_dictionaries(
        {"when": _CONDITIONS, "score": st.integers(min_value=-100, max_value=100)},
        optional={
            "action": _ACTIONS,
            "description": st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
            "enabled": st.booleans(),
        },
    ),
    max_size=5,
).map(lambda rules: [{**r, "id": f"r{i}"} for i, r in enumerate(rules)])


def _rule_set_schema():
    op = DOC["paths"].get("/v1/risk/rules", {}).get("put", {})
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = schema.get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = DOC["components"]["schemas"][ref.rsplit("/", 1)[1]]
    # The document's components alongside, for the schema's own references.
    return jsonschema.Draft202012Validator({**schema, "components": DOC["components"]})


_RULE_SET = _rule_set_schema()


def _valid_rule_set(body, rules):
    """`body` with parsing rules, thresholds in order (review below block), no `replaces`."""
    out = {**body, "rules": rules}
    out.pop("replaces", None)  # a random version name only ever meets 409
    review, block = out.get("review_at"), out.get("block_at")
    if isinstance(review, int) and isinstance(block, int) and review >= block:
        out.pop("review_at")
        out.pop("block_at")
    return out


@schemathesis.hook
def flatmap_body(context, body):
    if (
        context.operation
        and context.operation.path == "/v1/risk/rules"
        and isinstance(body, dict)
        and _RULE_SET.is_valid(body)
    ):
        # Only a schema-valid body: a negative case must stay negative.
        return st.one_of(st.just(body), _RULES.map(lambda r: _valid_rule_set(body, r)))
    # Always the real value: a random client secret only ever meets the same 403, and
    # the path's id (real half the time) already gives the foreign-session case.
    real = BODIES.get(context.operation.path) if context.operation else None
    if not real or not isinstance(body, dict):
        return st.just(body)
    return st.just({**body, **real})


SIGNATURE_HEADERS = {"Signature", "Signature-Input", "Content-Digest"}


@schemathesis.hook
def before_load_schema(context, raw_schema):
    refs = {f"#/components/parameters/{name}" for name in SIGNATURE_HEADERS}
    for item in raw_schema.get("paths", {}).values():
        for op in item.values():
            if isinstance(op, dict) and "parameters" in op:
                op["parameters"] = [p for p in op["parameters"] if p.get("$ref") not in refs]
