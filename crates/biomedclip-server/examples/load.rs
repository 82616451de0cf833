//! A load generator for `biomedclip serve`: C concurrent clients, each sending one request
//! after another for a fixed time, then throughput, latency percentiles, status counts and
//! the server's peak memory (from its `/metrics`).
//!
//! ```text
//! cargo run --release -p biomedclip-server --example load -- \
//!     --url http://127.0.0.1:8080 --concurrency 16 --seconds 30 --image scan.png [--images-per-request 1]
//! cargo run --release -p biomedclip-server --example load -- --url ... --text "chest X-ray"
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

struct Args {
    url: String,
    concurrency: usize,
    seconds: f64,
    body: Value,
    inputs_per_request: usize,
    key: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut url = "http://127.0.0.1:8080".to_string();
    let (mut concurrency, mut seconds, mut per_request) = (16usize, 30f64, 1usize);
    let (mut image, mut text, mut key) = (None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = value()?,
            "--concurrency" => {
                concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--seconds" => seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--images-per-request" => {
                per_request = value()?
                    .parse()
                    .map_err(|e| format!("--images-per-request: {e}"))?
            }
            "--image" => image = Some(value()?),
            "--text" => text = Some(value()?),
            "--api-key" => key = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let body = match (image, text) {
        (Some(path), None) => {
            let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            json!({ "images": vec![encoded; per_request] })
        }
        (None, Some(t)) => json!({ "texts": vec![t; per_request] }),
        _ => return Err("give --image PATH or --text T".into()),
    };
    Ok(Args {
        url,
        concurrency,
        seconds,
        body,
        inputs_per_request: per_request,
        key,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let agent = ureq::AgentBuilder::new()
        .max_idle_connections_per_host(args.concurrency)
        .timeout(Duration::from_secs(120))
        .build();
    let endpoint = format!("{}/embed", args.url);
    let body = Arc::new(args.body.to_string());
    let barrier = Arc::new(Barrier::new(args.concurrency + 1));
    let run_for = Duration::from_secs_f64(args.seconds);
    let clients: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (agent, endpoint, body, barrier) = (
                agent.clone(),
                endpoint.clone(),
                Arc::clone(&body),
                Arc::clone(&barrier),
            );
            let key = args.key.clone();
            std::thread::spawn(move || {
                let mut seen: Vec<(u16, f64)> = Vec::new();
                barrier.wait();
                let start = Instant::now();
                while start.elapsed() < run_for {
                    let sent = Instant::now();
                    let mut req = agent
                        .post(&endpoint)
                        .set("Content-Type", "application/json");
                    if let Some(k) = &key {
                        req = req.set("Authorization", &format!("Bearer {k}"));
                    }
                    let status = match req.send_string(&body) {
                        Ok(r) => {
                            let _ = r.into_string();
                            200
                        }
                        Err(ureq::Error::Status(code, r)) => {
                            // A well-behaved client waits as long as the server asks.
                            let wait = r
                                .header("Retry-After")
                                .and_then(|v| v.parse::<f64>().ok())
                                .filter(|_| code == 429 || code == 503);
                            let _ = r.into_string();
                            if let Some(seconds) = wait {
                                std::thread::sleep(Duration::from_secs_f64(seconds.min(10.0)));
                            }
                            code
                        }
                        Err(_) => 0,
                    };
                    seen.push((status, sent.elapsed().as_secs_f64()));
                }
                seen
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let results: Vec<(u16, f64)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for (s, _) in &results {
        *statuses.entry(*s).or_default() += 1;
    }
    let mut ok: Vec<f64> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    ok.sort_by(f64::total_cmp);
    let peak_rss = agent
        .get(&format!("{}/metrics", args.url))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("biomedclip_peak_rss_bytes "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
    println!(
        "clients {} for {elapsed:.1} s, {} input(s) per request",
        args.concurrency, args.inputs_per_request
    );
    println!(
        "throughput {:.2} requests/s, {:.2} inputs/s (200s only)",
        ok.len() as f64 / elapsed,
        (ok.len() * args.inputs_per_request) as f64 / elapsed
    );
    println!(
        "latency ms: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
        1e3 * percentile(&ok, 50.0),
        1e3 * percentile(&ok, 95.0),
        1e3 * percentile(&ok, 99.0),
        1e3 * ok.last().copied().unwrap_or(f64::NAN)
    );
    let counts: Vec<String> = statuses
        .iter()
        .map(|(s, n)| {
            if *s == 0 {
                format!("no answer: {n}")
            } else {
                format!("{s}: {n}")
            }
        })
        .collect();
    println!("statuses {}", counts.join(", "));
    match peak_rss {
        Some(b) => println!("server peak RSS {:.0} MB", b / 1e6),
        None => println!("server peak RSS unknown (no /metrics)"),
    }
}
