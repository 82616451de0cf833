//! `serve --collection NAME=DIR`: `/collections`, `POST /search` and the item images, against
//! the CLI's own search, with the errors a client can meet.

mod serving;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use serving::{base64_of, fixtures, tiny_model, Server};

fn build_collection(dir: &Path) -> std::path::PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for name in [
        "rgb_photo.jpg",
        "gray_cells.jpg",
        "ihc.jpg",
        "retina.bmp",
        "small.png",
        "tall.jpg",
    ] {
        std::fs::copy(fixtures().join("images").join(name), images.join(name)).unwrap();
    }
    std::fs::copy(fixtures().join("dicom/CT_small.dcm"), images.join("ct.dcm")).unwrap();
    let col = dir.join("col");
    let out = Command::new(env!("CARGO_BIN_EXE_biomedclip"))
        .args([
            "index",
            "build",
            "--ann",
            "--part-size",
            "3",
            "--model",
            &tiny_model(),
            "--out",
        ])
        .arg(&col)
        .arg(&images)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    col
}

fn cli_search(col: &Path, text: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_biomedclip"))
        .args([
            "search",
            "--json",
            "--top-k",
            "5",
            "--model",
            &tiny_model(),
            "--text",
            text,
        ])
        .arg(col)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn search_answers_as_the_cli_and_refuses_bad_requests_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let col = build_collection(tmp.path());
    let spec = format!("demo={}", col.display());
    let server = Server::start(&["--collection", &spec]);

    let (status, listed) = server.get("/collections");
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["name"], "demo");
    assert_eq!(listed[0]["rows"], 7);
    assert_eq!(listed[0]["ann"], true);

    // A text query: the CLI's results, the same scores.
    let (status, body) = server.post(
        "/search",
        &json!({"collection": "demo", "text": "an H&E slide", "top_k": 5}),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let cli = cli_search(&col, "an H&E slide");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for (a, b) in results.iter().zip(cli["results"].as_array().unwrap()) {
        assert_eq!(a["id"], b["id"]);
        assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-6);
        assert_eq!(a["metadata"], b["metadata"]);
    }
    assert!(body["notice"]
        .as_str()
        .unwrap()
        .contains("not for clinical use"));

    // An image query finds that image first, at cosine 1.
    let query = fixtures().join("images/ihc.jpg");
    let (status, body) = server.post(
        "/search",
        &json!({"collection": "demo", "image": base64_of(&query), "top_k": 1}),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["results"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("ihc.jpg"));
    assert!((body["results"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);

    // An embedding query, a filter, the HNSW index.
    let id = body["results"][0]["id"].as_u64().unwrap();
    let (status, ct) = server.post(
        "/search",
        &json!({"collection": "demo", "text": "x", "where": "modality = 'CT'", "ann": true}),
        None,
    );
    assert_eq!(status, 200, "{ct}");
    assert_eq!(ct["results"].as_array().unwrap().len(), 1);
    assert_eq!(ct["method"], "ann");
    assert_eq!(ct["results"][0]["metadata"]["modality"], "CT");

    // The item image: a PNG of what the model saw.
    let response = ureq::get(&format!("{}/collections/demo/items/{id}/image", server.url))
        .call()
        .unwrap();
    assert_eq!(response.content_type(), "image/png");
    let mut png = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut png).unwrap();
    let decoded = image::load_from_memory(&png).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (224, 224));

    let bad = |body: Value, status: u16, param: Option<&str>, words: &str| {
        let (s, answer) = server.post("/search", &body, None);
        assert_eq!(s, status, "{body} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{message}");
        if let Some(p) = param {
            assert_eq!(answer["error"]["param"], p, "{answer}");
        }
    };
    bad(
        json!({"collection": "other", "text": "x"}),
        404,
        None,
        "no collection \"other\"; this server has: demo",
    );
    bad(
        json!({"collection": "demo"}),
        422,
        Some("text"),
        "exactly one query",
    );
    bad(
        json!({"collection": "demo", "text": "x", "embedding": [0.0]}),
        422,
        Some("text"),
        "exactly one query",
    );
    bad(
        json!({"collection": "demo", "embedding": [1.0, 2.0]}),
        422,
        Some("embedding"),
        "32 finite numbers, got 2",
    );
    bad(
        json!({"collection": "demo", "text": "x", "top_k": 0}),
        422,
        Some("top_k"),
        "1 to 1000",
    );
    bad(
        json!({"collection": "demo", "text": "x", "where": "modality = 3"}),
        422,
        Some("where"),
        "holds text",
    );
    bad(
        json!({"collection": "demo", "text": "x", "captions": true}),
        422,
        Some("captions"),
        "no captions",
    );
    bad(
        json!({"collection": "demo", "image": "not base64!"}),
        422,
        Some("image"),
        "image",
    );

    // Items are rows, never paths.
    for (path, words) in [
        (
            "/collections/demo/items/..%2F..%2Fetc%2Fpasswd/image",
            "named by their id",
        ),
        ("/collections/demo/items/7/image", "has no row 7"),
        ("/collections/demo/items/-1/image", "named by their id"),
        ("/collections/nope/items/0/image", "this server has: demo"),
    ] {
        let (status, body) = server.get(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains(words), "{path}: {body}");
    }
    let (status, _) = server.get("/collections/demo/items/../../../etc/passwd");
    assert_eq!(status, 404);
    // A file deleted since the build: 404 naming the row; the server goes on.
    let (_, all) = server.post(
        "/search",
        &json!({"collection": "demo", "text": "x", "top_k": 7}),
        None,
    );
    let gone = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"].as_str().unwrap().ends_with("tall.jpg"))
        .unwrap();
    std::fs::remove_file(gone["path"].as_str().unwrap()).unwrap();
    let (status, body) = server.get(&format!("/collections/demo/items/{}/image", gone["id"]));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains(&format!("row {}", gone["id"])), "{body}");
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn a_collection_of_another_model_stops_the_server_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let col = build_collection(tmp.path());
    let path = col.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["model"]["name"] = "hf-hub:someone/other".into();
    m["model"]["weights_blake3"] = "ab".repeat(32).into();
    std::fs::write(&path, m.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_biomedclip"))
        .args([
            "serve",
            "--port",
            "0",
            "--model",
            &tiny_model(),
            "--collection",
        ])
        .arg(format!("demo={}", col.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--collection demo")
            && stderr.contains("hf-hub:someone/other")
            && stderr.contains("tiny-model"),
        "{stderr}"
    );
}
