// Verifies a webhook Strongroom delivered, with the public `standardwebhooks` npm package
// (v1, HMAC) or with Node's own Ed25519 (v1a, per the Standard Webhooks spec).
//
// Usage: node verify.js MESSAGE.json, where the file holds {secret | public_key, id,
// timestamp, signature, body}. Exits 0 when the real message verifies and a flipped byte
// and a stale timestamp are both refused.
"use strict";
const fs = require("fs");
const crypto = require("crypto");

let Webhook;
try {
  ({ Webhook } = require("standardwebhooks"));
} catch (e) {
  console.log("FAIL: the npm package `standardwebhooks` is not installed (npm ci in tests/interop/webhooks)");
  process.exit(2);
}

const m = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const headers = { "webhook-id": m.id, "webhook-timestamp": String(m.timestamp), "webhook-signature": m.signature };
const body = Buffer.from(m.body, "utf8");
const flipped = Buffer.from(body);
flipped[flipped.length >> 1] ^= 0x01;
const stale = { ...headers, "webhook-timestamp": String(Math.floor(Date.now() / 1000) - 3600) };

function v1a(payload, hdrs) {
  // Signed content `{id}.{timestamp}.{body}`; tolerance 5 minutes, as the libraries use.
  const ts = Number(hdrs["webhook-timestamp"]);
  if (Math.abs(Date.now() / 1000 - ts) > 300) throw new Error("stale");
  const raw = Buffer.from(m.public_key.replace(/^whpk_/, ""), "base64");
  const key = crypto.createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }, format: "jwk" });
  const content = Buffer.concat([Buffer.from(`${hdrs["webhook-id"]}.${hdrs["webhook-timestamp"]}.`), payload]);
  for (const entry of hdrs["webhook-signature"].split(" ")) {
    const [version, sig] = entry.split(",");
    if (version === "v1a" && crypto.verify(null, content, key, Buffer.from(sig, "base64"))) return;
  }
  throw new Error("no matching v1a signature");
}

function check(payload, hdrs) {
  if (m.public_key) return v1a(payload, hdrs);
  return new Webhook(m.secret).verify(payload.toString("utf8"), hdrs);
}

check(body, headers);
for (const [what, payload, hdrs] of [["a flipped byte", flipped, headers], ["a stale timestamp", body, stale]]) {
  let ok = false;
  try {
    check(payload, hdrs);
    ok = true;
  } catch (e) {}
  if (ok) {
    console.log(`FAIL: ${what} verified`);
    process.exit(1);
  }
}
console.log(`node ${m.public_key ? "ed25519 v1a" : "standardwebhooks v1"}: OK`);
