//! The relay's pure work per request: rendering the request, scrubbing the response.
//! Budget: the whole relay may add 60 µs of server CPU.
//! `cargo bench -p strongroom-core --bench relay`

// A wrong input would silently benchmark an error path: check them first.
#![allow(clippy::panic, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use strongroom_core::relay::{
    BodyKind, Escape, Field, JsonPointer, Template, Tokenized, find_json_pans, scrub,
};

const CARD: &str = "card_0192f3a4b5c67d8e9f00112233445566";
const PAN: &str = "4242424242424242";
const CVC: &str = "737";

/// A processor's authorization response of about 2 KiB that echoes the card number
/// (once plain, once spaced) and the CVC, among the usual amounts, ids and timestamps.
fn response() -> String {
    let mut events = String::new();
    for i in 0..12 {
        events.push_str(&format!(
            r#"{{"id":"evt_1Qx{i}ZxYq8Hk2m4n6p8r0t","type":"authorization.step","created":17334000{i:02}123,"amount":{},"ok":true}},"#,
            1099 + i
        ));
    }
    events.pop();
    let body = format!(
        r#"{{"id":"pi_3Qx7ZxYq8Hk2m4n6p8r0t2v4","object":"payment","amount":1099,"currency":"eur","status":"authorized",
"created":1733400000123,"merchant_reference":"order-2026-12-05-000123","description":"Order 123 for 2 items",
"payment_method":{{"type":"card","card":{{"number":"{PAN}","display":"4242 4242 4242 4242","cvc":"{CVC}","exp_month":"12","exp_year":"2031","brand":"visa","funding":"credit","country":"US"}}}},
"network_transaction_id":"583201948573621","authorization_code":"A1B2C3","avs_result":"Y","cvc_result":"M",
"billing":{{"name":"Anne Example","line1":"1 Example Street","city":"Example","postal_code":"12345","country":"US"}},
"events":[{events}],
"metadata":{{"note":"relay benchmark"}}}}"#
    );
    assert!((1800..2600).contains(&body.len()), "{}", body.len());
    body
}

fn request() -> String {
    format!(
        r#"{{"amount":1099,"currency":"eur","reference":"order-2026-12-05-000123","payment_method":{{"type":"scheme","number":"{{{{{CARD}:number}}}}","expiryMonth":"{{{{{CARD}:exp_month}}}}","expiryYear":"{{{{{CARD}:exp_year}}}}","holderName":"{{{{{CARD}:cardholder_name}}}}","cvc":"{{{{{CARD}:cvc}}}}"}},"shopperReference":"cus_0192","returnUrl":"https://shop.example/return"}}"#
    )
}

fn lookup(_: &str, f: Field) -> Option<&'static str> {
    Some(match f {
        Field::Number => PAN,
        Field::ExpMonth => "12",
        Field::ExpYear => "2031",
        Field::ExpYear2 => "31",
        Field::CardholderName => "Anne Example",
        Field::Cvc => CVC,
        Field::PinBlock => "0123456789ABCDEF",
    })
}

fn relay(c: &mut Criterion) {
    let resp = response();
    let req = request();
    let secrets: [&[u8]; 2] = [PAN.as_bytes(), CVC.as_bytes()];
    let out = scrub(resp.as_bytes(), BodyKind::Json, &secrets, &[]);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains(PAN) && !text.contains("4242 4242") && !text.contains(CVC));
    let pointers = [JsonPointer::parse("/payment_method/card/number").unwrap()];
    assert_eq!(find_json_pans(resp.as_bytes(), &pointers).len(), 1);
    let t = Template::parse(&req, Escape::Json).unwrap();
    assert!(t.render(lookup).unwrap().contains(PAN));

    let mut g = c.benchmark_group("relay");
    g.bench_function("scrub/json_2kib", |b| {
        b.iter(|| scrub(black_box(resp.as_bytes()), BodyKind::Json, &secrets, &[]))
    });
    g.bench_function("scrub/json_2kib_tokenize_one_field", |b| {
        b.iter(|| {
            let hits = find_json_pans(black_box(resp.as_bytes()), &pointers);
            let reps: Vec<Tokenized<'_>> = hits
                .iter()
                .map(|h| Tokenized {
                    range: h.range.clone(),
                    token: CARD,
                })
                .collect();
            scrub(resp.as_bytes(), BodyKind::Json, &secrets, &reps)
        })
    });
    g.bench_function("template/parse_and_render_json", |b| {
        b.iter(|| {
            Template::parse(black_box(&req), Escape::Json)
                .and_then(|t| t.render(lookup))
                .is_ok()
        })
    });
    g.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
