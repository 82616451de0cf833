//! `biomedclip serve` on the committed tiny checkpoint, called over HTTP: answers equal the
//! CLI's, concurrent requests are coalesced, every error has its status, and a shutdown
//! loses no accepted request.

mod serving;

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use serving::*;

/// The parity bound of the server against the CLI: the same engine on the same inputs.
const SAME: f64 = 0.999999;

fn fixture_images() -> Vec<PathBuf> {
    [
        "ihc.jpg",
        "gray.png",
        "rgba.png",
        "CT_small.dcm",
        "palette.png",
    ]
    .iter()
    .map(|n| image(n))
    .collect()
}

fn encoded(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| base64_of(p)).collect()
}

/// A multipart form: text fields, then files named `images`.
fn form(fields: &[(&str, &str)], files: &[PathBuf]) -> (String, Vec<u8>) {
    let boundary = "biomedclip-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .bytes(),
        );
    }
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap();
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").bytes());
        body.extend(std::fs::read(f).unwrap());
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn embeddings_equal_the_cli_on_every_route_and_encoding() {
    let server = Server::start(&[]);
    let images = fixture_images();
    let texts = [
        "chest X-ray",
        "hematoxylin and eosin histopathology",
        "ﬁbrosis cafÃ©",
    ];
    let (cli_images, cli_texts) = cli_embed(&images, &texts);

    let (status, body) = server.post(
        "/embed",
        &json!({"images": encoded(&images), "texts": texts}),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dim"], 32);
    for (got, want) in body["images"].as_array().unwrap().iter().zip(&cli_images) {
        assert!(cosine(&floats(got), want) >= SAME);
    }
    for (got, want) in body["texts"].as_array().unwrap().iter().zip(&cli_texts) {
        assert!(cosine(&floats(got), want) >= SAME);
    }
    assert_eq!(body["images"].as_array().unwrap().len(), images.len());

    // Data URIs, and base64 little-endian f32 out.
    let uris: Vec<String> = encoded(&images)
        .into_iter()
        .map(|b| format!("data:application/octet-stream;base64,{b}"))
        .collect();
    let (status, body) = server.post(
        "/embed",
        &json!({"images": uris, "encoding_format": "base64"}),
        None,
    );
    assert_eq!(status, 200, "{body}");
    for (got, want) in body["images"].as_array().unwrap().iter().zip(&cli_images) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(got.as_str().unwrap())
            .unwrap();
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(cosine(&values, want) >= SAME);
    }

    // Multipart uploads.
    let (content_type, form_body) = form(&[("texts", texts[0])], &images);
    let (status, body) = server.post_bytes("/embed", &content_type, &form_body);
    assert_eq!(status, 200, "{body}");
    for (got, want) in body["images"].as_array().unwrap().iter().zip(&cli_images) {
        assert!(cosine(&floats(got), want) >= SAME);
    }
    assert!(cosine(&floats(&body["texts"][0]), &cli_texts[0]) >= SAME);

    // OpenAI's API: texts, then images with `modality: "image"`.
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"input": texts, "model": "anything"}),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    for (i, want) in cli_texts.iter().enumerate() {
        assert_eq!(body["data"][i]["index"], i);
        assert!(cosine(&floats(&body["data"][i]["embedding"]), want) >= SAME);
    }
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"input": format!("data:image/jpeg;base64,{}", base64_of(&images[0])), "modality": "image"}),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(cosine(&floats(&body["data"][0]["embedding"]), &cli_images[0]) >= SAME);
}

#[test]
fn classify_equals_the_cli_and_caches_label_prompts() {
    let server = Server::start(&[]);
    let images = fixture_images();
    let labels = [
        "chest X-ray",
        "brain MRI",
        "immunohistochemistry histopathology",
    ];
    let cli = cli_classify(&images, &labels);

    let (status, body) = server.post(
        "/classify",
        &json!({"images": encoded(&images), "labels": labels}),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let results = body.as_array().unwrap();
    assert_eq!(results.len(), images.len());
    for (i, (result, want)) in results.iter().zip(&cli).enumerate() {
        assert_eq!(result["image"], format!("images[{i}]"));
        let got = scores(result);
        // Same ranking, same probabilities.
        assert_eq!(
            got.iter().map(|s| &s.0).collect::<Vec<_>>(),
            want.iter().map(|s| &s.0).collect::<Vec<_>>()
        );
        for (g, w) in got.iter().zip(want) {
            assert!((g.1 - w.1).abs() <= 1e-6, "{g:?} vs {w:?}");
        }
    }
    let texts_before = server.metric("biomedclip_texts_total");
    let misses = server.metric("biomedclip_label_cache_misses_total");
    assert_eq!(misses, labels.len() as f64);

    // The same labels again, as a form with a preview and top_k: no text inference.
    let (content_type, form_body) = form(
        &[
            ("labels", &labels.join("\n")),
            ("top_k", "2"),
            ("preview", "true"),
        ],
        &images[..2],
    );
    let (status, body) = server.post_bytes("/classify", &content_type, &form_body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["image"], "ihc.jpg");
    assert_eq!(body[1]["image"], "gray.png");
    assert_eq!(body[0]["scores"].as_array().unwrap().len(), 2);
    for (got, want) in scores(&body[1]).iter().zip(&cli[1]) {
        assert_eq!(got.0, want.0);
        assert!((got.1 - want.1).abs() <= 1e-6);
    }
    let preview = body[0]["preview"].as_str().unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(preview.strip_prefix("data:image/png;base64,").unwrap())
        .unwrap();
    let decoded = image::load_from_memory(&png).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (224, 224));
    assert_eq!(server.metric("biomedclip_texts_total"), texts_before);
    assert_eq!(
        server.metric("biomedclip_label_cache_hits_total"),
        labels.len() as f64
    );

    // Several templates are ensembled; the answer is still a ranking summing to 1.
    let (status, body) = server.post(
        "/classify",
        &json!({"images": encoded(&images[..1]), "labels": labels, "templates": ["a photo of ", "an image of "]}),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let total: f32 = scores(&body[0]).iter().map(|s| s.1).sum();
    assert!((total - 1.0).abs() < 1e-5);
}

#[test]
fn concurrent_requests_are_coalesced_and_equal_one_at_a_time() {
    let server = Arc::new(Server::start(&[]));
    let images = fixture_images();
    let (want, _) = cli_embed(&images, &[]);
    let clients = 16;
    let rounds = 6;
    let barrier = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let server = Arc::clone(&server);
            let barrier = Arc::clone(&barrier);
            let path = images[c % images.len()].clone();
            std::thread::spawn(move || {
                let body = json!({"images": [base64_of(&path)]});
                barrier.wait();
                (0..rounds)
                    .map(|_| {
                        let (status, answer) = server.post("/embed", &body, None);
                        assert_eq!(status, 200, "{answer}");
                        floats(&answer["images"][0])
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (c, t) in threads.into_iter().enumerate() {
        for got in t.join().unwrap() {
            assert!(cosine(&got, &want[c % images.len()]) >= SAME);
        }
    }
    // Some engine call ran more than one request.
    let batches = server.metric("biomedclip_batch_requests_count");
    let singles = server.metric("biomedclip_batch_requests_bucket{le=\"1.0\"}");
    assert!(batches > 0.0);
    assert!(
        singles < batches,
        "{batches} engine calls, all with one request: nothing was coalesced"
    );
    assert_eq!(
        server.metric("biomedclip_requests_total{route=\"/embed\",status=\"200\"}"),
        (clients * rounds) as f64
    );
}

#[test]
fn every_error_has_its_status_and_names_the_input() {
    let server = Server::start(&[
        "--payload-limit",
        "200000",
        "--max-client-batch",
        "4",
        "--max-image-pixels",
        "60000",
    ]);
    let good = base64_of(&image("small.png"));
    // The start-up probe's image.
    let computed = server.metric("biomedclip_images_total");
    let check = |path: &str, body: Value, status: u16, needle: &str| {
        let (got, answer) = server.post(path, &body, None);
        assert_eq!(got, status, "{path} {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    };
    check(
        "/embed",
        json!({"images": [good, "not base64!"]}),
        422,
        "images[1]: not base64",
    );
    let png = std::fs::read(image("exact224.png")).unwrap();
    let truncated = base64::engine::general_purpose::STANDARD.encode(&png[..png.len() / 2]);
    let (status, body) = server.post("/embed", &json!({"images": [good, truncated]}), None);
    assert_eq!(status, 422);
    assert_eq!(body["error"]["index"], 1);
    assert_eq!(body["error"]["param"], "images");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("images[1]"));
    // Nothing of a refused request is computed.
    assert_eq!(server.metric("biomedclip_images_total"), computed);
    // More pixels than the decompression-bomb limit (here 60,000; the fixture has 90,000).
    check(
        "/classify",
        json!({"images": [base64_of(&image("wide.png"))], "labels": ["a", "b"]}),
        422,
        "pixels is more than the limit",
    );
    check(
        "/embed",
        json!({"texts": ["a", "b", "c", "d", "e"]}),
        413,
        "at most 4",
    );
    let big = "A".repeat(300_000);
    check("/embed", json!({"images": [big]}), 413, "--payload-limit");
    oversized_body_is_answered_and_the_connection_kept(&server.url, 300_000);
    oversized_body_after_expect_continue_is_refused_unsent(&server.url, 300_000);
    check("/embed", json!({"imgs": []}), 422, "unknown field `imgs`");
    check(
        "/embed",
        json!({"texts": ["a"], "normalize": false}),
        422,
        "normalize",
    );
    check(
        "/v1/embeddings",
        json!({"input": "a", "dimensions": 8}),
        422,
        "dimensions: 8",
    );
    check(
        "/v1/embeddings",
        json!({"input": [[101, 102]]}),
        422,
        "token ids are not accepted",
    );
    check(
        "/classify",
        json!({"images": [good], "labels": ["a", "b", "a"]}),
        422,
        "labels[2]",
    );
    check(
        "/classify",
        json!({"images": [good], "labels": ["a"], "template": "x", "templates": ["y"]}),
        422,
        "not both",
    );
    let (status, body) = server.post_bytes("/embed", "application/json", b"{\"texts\": [");
    assert_eq!(status, 400, "{body}");
    let (status, _) = server.get("/nowhere");
    assert_eq!(status, 404);
    // The server kept serving through all of it.
    let (status, body) = server.post("/embed", &json!({"images": [good]}), None);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn api_key_guards_the_work_routes_only() {
    let server = Server::start(&["--api-key", "s3cret"]);
    let body = json!({"texts": ["chest X-ray"]});
    let (status, answer) = server.post("/embed", &body, None);
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["type"], "authentication_error");
    assert_eq!(server.post("/embed", &body, Some("wrong")).0, 401);
    assert_eq!(server.post("/embed", &body, Some("s3cret")).0, 200);
    assert_eq!(server.get("/info").0, 401);
    for open in ["/health", "/metrics", "/", "/openapi.json", "/docs"] {
        assert_eq!(server.get(open).0, 200, "{open}");
    }
}

#[test]
fn meta_routes_describe_the_server() {
    let server = Server::start(&["--precision", "int8"]);
    let (status, info) = server.get("/info");
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["embed_dim"], 32);
    assert_eq!(info["image_size"], 224);
    assert_eq!(info["precision"], "int8");
    assert_eq!(info["limits"]["payload_limit"], 32 * 1024 * 1024);
    assert!(info["notice"]
        .as_str()
        .unwrap()
        .contains("not for clinical use"));

    let (_, spec) = server.get("/openapi.json");
    let spec: Value = serde_json::from_str(&spec).unwrap();
    for path in [
        "/embed",
        "/v1/embeddings",
        "/classify",
        "/health",
        "/info",
        "/metrics",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let schemas = &spec["components"]["schemas"];
    assert!(schemas["ClassifyRequest"]["properties"]["labels"].is_object());
    assert!(schemas["EmbedRequest"]["properties"]["images"].is_object());

    let (_, page) = server.get("/");
    assert!(page.contains("not for clinical use"));
    let (_, metrics) = server.get("/metrics");
    assert!(metrics.contains("biomedclip_queue_size"));
    assert!(metrics.contains("biomedclip_inference_duration_seconds"));
    assert!(server.metric("biomedclip_peak_rss_bytes") > 1e6);
}

#[test]
fn a_full_server_answers_429_and_a_slow_request_503() {
    let server = Arc::new(Server::start(&["--max-concurrent-requests", "1"]));
    let images: Vec<String> = (0..4).map(|_| base64_of(&image("rgb_photo.jpg"))).collect();
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let server = Arc::clone(&server);
            let barrier = Arc::clone(&barrier);
            let body = json!({ "images": images });
            std::thread::spawn(move || {
                barrier.wait();
                (0..3)
                    .map(|_| server.post_full("/embed", &body, None))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!(ok + busy.len(), answers.len(), "only 200 and 429 expected");
    assert!(
        ok > 0 && !busy.is_empty(),
        "{ok} answered, {} refused",
        busy.len()
    );
    for (_, retry, body) in busy {
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }

    // 48 photographs to decode take longer than 20 ms on any machine.
    let slow = Server::start(&["--request-timeout", "0.02"]);
    let many = vec![images[0].clone(); 48];
    let (status, _, body) = slow.post_full("/embed", &json!({ "images": many }), None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["type"], "timeout");
    assert_eq!(slow.get("/health").0, 200);
}

#[test]
fn shutdown_finishes_every_accepted_request_and_exits_0() {
    let mut server = Server::start(&[]);
    let url = server.url.clone();
    // Enough work that requests are still in flight when the signal comes.
    let images: Vec<String> = (0..16)
        .map(|_| base64_of(&image("rgb_photo.jpg")))
        .collect();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            let body = json!({ "images": images });
            std::thread::spawn(move || {
                ureq::post(&format!("{url}/embed"))
                    .send_json(body)
                    .map_err(Box::new)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
    let mut completed = 0;
    for t in threads {
        match t.join().unwrap() {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                let body: Value = r.into_json().unwrap();
                assert_eq!(body["images"].as_array().unwrap().len(), 16);
                completed += 1;
            }
            // Not accepted before the listener closed: refused, never cut off.
            Err(e) => match *e {
                ureq::Error::Transport(t) => {
                    assert_eq!(t.kind(), ureq::ErrorKind::ConnectionFailed, "{t}");
                }
                e => panic!("an accepted request was lost: {e}"),
            },
        }
    }
    assert!(completed > 0, "no request was in flight at the shutdown");
}

#[test]
fn a_model_that_cannot_load_stops_the_server_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_biomedclip"))
        .args(["serve", "--port", "0", "--model"])
        .arg(dir.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!child.status.success());
    let stderr = String::from_utf8(std::mem::take(&mut child.stderr)).unwrap();
    assert!(stderr.contains("cannot start the model"), "{stderr}");
    assert!(stderr.contains("open_clip_config.json"), "{stderr}");
}

/// Sends a body over the payload limit and then a second request on the same connection:
/// the server reads the refused body, answers 413 and keeps serving the connection (had it
/// closed with the body unread, a client still sending would meet a reset instead).
fn oversized_body_is_answered_and_the_connection_kept(url: &str, size: usize) {
    use std::io::{Read, Write};
    let (mut stream, address) = raw_connection(url);
    let mut request = embed_head(address, size, "").into_bytes();
    request.extend_from_slice(&vec![b'x'; size]);
    request.extend_from_slice(
        format!("GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    stream.write_all(&request).unwrap();
    let mut answers = String::new();
    stream.read_to_string(&mut answers).unwrap();
    // A JSON body has no line end, so the next status line follows it on the same line.
    let statuses: Vec<&str> = answers
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| answers[at..].lines().next().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["HTTP/1.1 413 Payload Too Large", "HTTP/1.1 200 OK"],
        "{answers}"
    );
    assert!(answers.contains(&format!("{size} bytes sent")), "{answers}");
}

/// A client that asks before sending (`Expect: 100-continue`, as curl does for large bodies)
/// gets the 413 at once, not a "100 Continue" that would have it upload a refused body.
fn oversized_body_after_expect_continue_is_refused_unsent(url: &str, size: usize) {
    use std::io::{BufRead, BufReader, Write};
    let (mut stream, address) = raw_connection(url);
    let head = embed_head(address, size, "Expect: 100-continue\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut status = String::new();
    BufReader::new(&stream).read_line(&mut status).unwrap();
    assert_eq!(status.trim_end(), "HTTP/1.1 413 Payload Too Large");
}

/// A plain TCP connection to the server (for what an HTTP client library will not send),
/// with its `host:port`.
fn raw_connection(url: &str) -> (std::net::TcpStream, &str) {
    let address = url.trim_start_matches("http://");
    let stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    (stream, address)
}

/// The head of a `POST /embed` declaring a `size`-byte JSON body, with `extra` header lines.
fn embed_head(address: &str, size: usize, extra: &str) -> String {
    format!(
        "POST /embed HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {size}\r\n{extra}\r\n"
    )
}
