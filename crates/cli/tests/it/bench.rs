//! `strongroom bench --spawn` end to end with the real binary: it starts its own server,
//! preloads cards, runs every scenario over real HTTPS on loopback (HTTP/1.1 and HTTP/2),
//! and writes the JSON report the issue asks for.

use std::process::Command;

fn bench(extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args([
            "bench",
            "--spawn",
            "--scenario",
            "floor,tokenize,get,mixed,auth",
            "--duration",
            "700ms",
            "--concurrency",
            "8",
            "--preload",
            "40",
            "--json",
        ])
        .arg(&json)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn check(report: &serde_json::Value, http: &str) {
    assert_eq!(report["config"]["http"], http);
    assert_eq!(report["config"]["preloaded"], 40);
    for name in ["floor", "tokenize", "get", "mixed", "auth"] {
        let s = &report["scenarios"][name];
        assert_eq!(s["errors"], 0, "{name}: {s}");
        assert!(s["ok"].as_u64().unwrap() > 0, "{name}: {s}");
        assert!(s["ops_per_s"].as_f64().unwrap() > 0.0, "{name}: {s}");
        // Exactly the connections asked for, each kept alive for the whole run.
        assert_eq!(s["connections"], 8, "{name}: {s}");
        assert!(
            s["p50_ms"].as_f64().unwrap() <= s["p99_ms"].as_f64().unwrap(),
            "{name}: {s}"
        );
        assert!(
            s["server_cpu_us_per_op"].as_f64().unwrap() > 0.0,
            "{name}: {s}"
        );
        assert!(
            s["server_peak_rss_mb"].as_f64().unwrap() > 0.0,
            "{name}: {s}"
        );
    }
    assert_eq!(report["scenarios"]["floor"]["floor_ratio"], 1.0);
    // The SQLite writer thread is found in the server and is part of its CPU.
    let t = &report["scenarios"]["tokenize"];
    let writer = t["writer_cpu_us_per_op"]
        .as_f64()
        .expect("writer CPU of a spawned server");
    assert!(writer <= t["server_cpu_us_per_op"].as_f64().unwrap(), "{t}");
}

#[test]
fn bench_spawn_runs_every_scenario_over_http1() {
    check(&bench(&["--http1"]), "http1");
}

#[test]
fn bench_spawn_runs_every_scenario_over_http2() {
    check(&bench(&["--http2"]), "http2");
}

/// The relay scenarios: the bench's own echo processor, approved through the admin API,
/// measured through `POST /v1/relay` and straight.
#[test]
fn bench_spawn_runs_the_relay_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args([
            "bench",
            "--spawn",
            "--scenario",
            "relay-direct,relay",
            "--duration",
            "700ms",
            "--concurrency",
            "4",
            "--preload",
            "0",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("relay-direct"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for name in ["relay", "relay-direct"] {
        let s = &report["scenarios"][name];
        assert_eq!(s["errors"], 0, "{name}: {s}");
        assert!(s["ok"].as_u64().unwrap() > 0, "{name}: {s}");
        assert!(s["echo_cpu_us_per_op"].as_f64().is_some(), "{name}: {s}");
    }
    assert!(
        report["scenarios"]["relay"]["server_cpu_us_per_op"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let ratio = report["relay"]["ratio"].as_f64().unwrap();
    assert!(ratio > 0.0, "{}", report["relay"]);
}
