//! Starting `biomedclip serve` on the tiny checkpoint, calling it, and comparing with the
//! CLI, for the server's integration tests.
#![allow(dead_code)] // each test file uses its own share of the helpers

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

/// The library crate's committed fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../biomedclip/tests/fixtures")
}

/// The tiny checkpoint, or the model in `BIOMEDCLIP_TEST_MODEL` (for the README's
/// screenshot, taken with a full-size checkpoint).
pub fn tiny_model() -> String {
    std::env::var("BIOMEDCLIP_TEST_MODEL")
        .unwrap_or_else(|_| fixtures().join("tiny-model").to_str().unwrap().to_string())
}

/// A fixture image's path.
pub fn image(name: &str) -> PathBuf {
    let images = fixtures().join("images").join(name);
    if images.exists() {
        images
    } else {
        fixtures().join("dicom").join(name)
    }
}

/// A file's bytes as base64.
pub fn base64_of(path: &Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Server {
    /// Starts `biomedclip serve` on the tiny model on a free port with `extra` arguments
    /// and waits until `/health` answers 200.
    pub fn start(extra: &[&str]) -> Server {
        let server = Server::spawn(extra);
        server.wait_ready();
        server
    }

    /// Starts the server without waiting for the model.
    pub fn spawn(extra: &[&str]) -> Server {
        let model = tiny_model();
        let mut args = vec!["serve", "--model", &model, "--port", "0"];
        args.extend_from_slice(extra);
        let mut child = Command::new(env!("CARGO_BIN_EXE_biomedclip"))
            .args(&args)
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("BIOMEDCLIP_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the server exited before listening")
                .unwrap();
            eprintln!("server: {line}");
            if let Some(rest) = line.strip_prefix("listening on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("server: {line}");
            }
        });
        Server { child, url }
    }

    /// Waits until `/health` answers 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if self.get("/health").0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not become ready");
    }

    /// `GET path`: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        answer(ureq::get(&format!("{}{path}", self.url)).call())
    }

    /// `POST path` with a JSON body (and an API key when given): status, JSON body and the
    /// `Retry-After` header.
    pub fn post(&self, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        let (status, _, body) = self.post_full(path, body, key);
        (status, body)
    }

    /// [`Server::post`] with the `Retry-After` header.
    pub fn post_full(
        &self,
        path: &str,
        body: &Value,
        key: Option<&str>,
    ) -> (u16, Option<String>, Value) {
        let mut req = ureq::post(&format!("{}{path}", self.url));
        if let Some(key) = key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        response_json(req.send_json(body.clone()))
    }

    /// `POST path` with raw bytes and a content type.
    pub fn post_bytes(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let r = ureq::post(&format!("{}{path}", self.url))
            .set("Content-Type", content_type)
            .send_bytes(body);
        let (status, _, body) = response_json(r);
        (status, body)
    }

    /// The value of one line of `/metrics` (`name{labels}` exactly as printed), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("no answer: {e}"),
    }
}

/// Status, `Retry-After` and JSON body of an answer.
pub fn response_json(r: Result<ureq::Response, ureq::Error>) -> (u16, Option<String>, Value) {
    let r = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("no answer: {e}"),
    };
    let status = r.status();
    let retry = r.header("Retry-After").map(str::to_string);
    let text = r.into_string().unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: not JSON ({e}): {text}"));
    (status, retry, body)
}

/// A JSON array of numbers as floats.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// `biomedclip embed` on the tiny model: image embeddings then text embeddings.
pub fn cli_embed(images: &[PathBuf], texts: &[&str]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let model = tiny_model();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_biomedclip"));
    cmd.args(["embed", "--model", &model])
        .env("HF_HUB_OFFLINE", "1");
    for i in images {
        cmd.arg("--image").arg(i);
    }
    for t in texts {
        cmd.args(["--text", t]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut imgs, mut txts) = (Vec::new(), Vec::new());
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let e = floats(&v["embedding"]);
        if v["type"] == "image" {
            imgs.push(e);
        } else {
            txts.push(e);
        }
    }
    (imgs, txts)
}

/// `biomedclip classify --json` on the tiny model: per image, label -> probability.
pub fn cli_classify(images: &[PathBuf], labels: &[&str]) -> Vec<Vec<(String, f32)>> {
    let model = tiny_model();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_biomedclip"));
    cmd.args(["classify", "--json", "--model", &model])
        .env("HF_HUB_OFFLINE", "1");
    for l in labels {
        cmd.args(["--label", l]);
    }
    cmd.args(images);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().map(scores).collect()
}

/// The `scores` of one classify answer as (label, probability), in the order given.
pub fn scores(result: &Value) -> Vec<(String, f32)> {
    result["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["label"].as_str().unwrap().to_string(),
                s["probability"].as_f64().unwrap() as f32,
            )
        })
        .collect()
}
