//! Collections in a real PostgreSQL 16 + pgvector (the binaries of the `pgserver` wheel, which
//! `.ci/run` unpacks and names in `BIOMEDCLIP_PG_BIN`): shard workers writing one table at
//! once, killed workers that resume without duplicates, search equal to the folder store's,
//! HNSW recall against exact, updates, locks and errors, and the server searching the table.
//!
//! Each test starts its own server in a temporary folder on a port it picks, on 127.0.0.1,
//! and stops it. Without `BIOMEDCLIP_PG_BIN` the tests are skipped, unless
//! `BIOMEDCLIP_REQUIRE_POSTGRES=1` (CI) makes that a failure.

mod serving;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serving::{tiny_model, Server};

/// A PostgreSQL server for one test.
struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    libs: Option<String>,
    user: Option<String>,
    port: u16,
}

impl Postgres {
    /// Starts one, or returns `None` (skip) when no binaries are configured.
    fn start() -> Option<Postgres> {
        let Some(bin) = std::env::var_os("BIOMEDCLIP_PG_BIN").map(PathBuf::from) else {
            assert!(
                std::env::var("BIOMEDCLIP_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "BIOMEDCLIP_REQUIRE_POSTGRES=1 but BIOMEDCLIP_PG_BIN is not set"
            );
            eprintln!("skipped: set BIOMEDCLIP_PG_BIN to PostgreSQL's bin/ (see .ci/run)");
            return None;
        };
        // PostgreSQL refuses to run as root: as root, run it as an unprivileged user.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let user = if root {
            Some(std::env::var("BIOMEDCLIP_PG_USER").expect(
                "running as root: BIOMEDCLIP_PG_USER must name an unprivileged user for postgres",
            ))
        } else {
            None
        };
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some(user) = &user {
            let ok = Command::new("chown")
                .arg(user)
                .arg(&data)
                .status()
                .unwrap()
                .success();
            assert!(ok, "cannot chown {} to {user}", data.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres {
            _dir: dir,
            data,
            bin,
            libs: std::env::var("BIOMEDCLIP_PG_LIBS").ok(),
            user,
            port,
        };
        let db = pg.data.join("db");
        let out = pg.tool(
            "initdb",
            &[
                "-D",
                &db.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        assert!(out.status.success(), "initdb: {}", text(&out.stderr));
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            pg.data.display()
        );
        let log = pg.data.join("log");
        let out = pg.tool(
            "pg_ctl",
            &[
                "-D",
                &db.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            text(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(pg)
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        if let Some(libs) = &self.libs {
            cmd.env("LD_LIBRARY_PATH", libs);
        }
        cmd
    }

    fn tool(&self, tool: &str, args: &[&str]) -> Output {
        self.command(tool).args(args).output().unwrap()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL through psql; returns its unaligned output.
    fn sql(&self, sql: &str) -> String {
        let out = self.psql().args(["-c", sql]).output().unwrap();
        assert!(out.status.success(), "psql {sql}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    }

    /// Rows of `table`; 0 while it does not exist.
    fn count(&self, table: &str) -> usize {
        let out = self
            .psql()
            .args(["-c", &format!("SELECT count(*) FROM {table}")])
            .output()
            .unwrap();
        text(&out.stdout).trim().parse().unwrap_or(0)
    }

    fn psql(&self) -> Command {
        let mut c = self.command("psql");
        c.args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "postgres",
        ]);
        c
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let db = self.data.join("db");
        let _ = self.tool(
            "pg_ctl",
            &["-D", &db.to_string_lossy(), "-m", "immediate", "stop"],
        );
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn biomedclip() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_biomedclip"));
    c.env("HF_HUB_OFFLINE", "1").env_remove("BIOMEDCLIP_STORE");
    c
}

/// `n` distinct images (random blocks of colour, so that no two embed alike) and one file
/// that is not an image.
fn images(dir: &Path, n: usize, seed: u64) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let mut out = Vec::new();
    for i in 0..n {
        let img = image::RgbImage::from_fn(8, 8, |_, _| {
            let v = next();
            image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        });
        let path = dir.join(format!("img{i:03}.png"));
        img.save(&path).unwrap();
        out.push(path);
    }
    std::fs::write(dir.join("broken.png"), b"not an image").unwrap();
    out
}

fn build_args(store: Option<&str>, out: &str, input: &Path, extra: &[&str]) -> Command {
    let mut c = biomedclip();
    c.args(["index", "build", "--model", &tiny_model(), "--out", out]);
    if let Some(url) = store {
        c.args(["--store", url]);
    }
    c.args(extra).arg(input);
    c
}

/// A build that ends as expected: success, or failure only because of the broken file.
fn assert_built(out: &Output) {
    let stderr = text(&out.stderr);
    assert!(
        out.status.success()
            || (out.status.code() == Some(1) && stderr.contains("could not be embedded")),
        "{stderr}"
    );
}

fn search(store: Option<&str>, collection: &str, args: &[&str]) -> Vec<Value> {
    let mut c = biomedclip();
    c.args(["search", "--json", "--model", &tiny_model(), collection]);
    if let Some(url) = store {
        c.args(["--store", url]);
    }
    let out = c.args(args).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (path, score) of each result.
fn ranked(result: &Value) -> Vec<(String, f64)> {
    result["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Same paths in the same order and scores within 1e-5 (pgvector sums in its own order).
fn assert_same_ranking(db: &Value, folder: &Value) {
    let (a, b) = (ranked(db), ranked(folder));
    assert_eq!(a.len(), b.len(), "{db}\n{folder}");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0, "{db}\n{folder}");
        assert!((x.1 - y.1).abs() < 1e-5, "{x:?} vs {y:?}");
    }
    for (x, y) in db["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(folder["results"].as_array().unwrap())
    {
        assert_eq!(x["metadata"], y["metadata"]);
    }
}

fn queries(files: &[PathBuf]) -> Vec<String> {
    let mut q = Vec::new();
    for t in ["a chest x-ray", "an H&E stained slide", "a brain MRI"] {
        q.push("--text".into());
        q.push(t.into());
    }
    for f in files.iter().step_by(7) {
        q.push("--image".into());
        q.push(f.to_string_lossy().into_owned());
    }
    q
}

#[test]
fn shard_workers_fill_one_table_and_search_equals_the_folder_store() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    let files = images(&dir, 150, 1);
    let folder = tmp.path().join("folder").to_string_lossy().into_owned();
    assert_built(&build_args(None, &folder, &dir, &[]).output().unwrap());

    // Two workers at once, each its half, in small transactions.
    let workers: Vec<Child> = ["1/2", "2/2"]
        .iter()
        .map(|s| {
            build_args(
                Some(&url),
                "slides",
                &dir,
                &["--shard", s, "--part-size", "16"],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for w in workers {
        assert_built(&w.wait_with_output().unwrap());
    }
    assert_eq!(pg.sql("SELECT count(*) FROM slides"), "150");
    assert_eq!(
        pg.sql("SELECT count(DISTINCT image_path) FROM slides"),
        "150"
    );
    assert_eq!(
        pg.sql("SELECT image_path FROM slides__failed"),
        dir.join("broken.png").to_string_lossy()
    );
    assert_eq!(
        pg.sql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'slides'::regclass AND attname = 'img_emb'"),
        "vector(32)"
    );
    // A worker run again finds its share done.
    let again = build_args(
        Some(&url),
        "slides",
        &dir,
        &["--shard", "1/2", "--part-size", "16"],
    )
    .output()
    .unwrap();
    assert_built(&again);
    assert!(
        text(&again.stderr).contains(" 0 to embed"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(pg.sql("SELECT count(*) FROM slides"), "150");

    // Exact search equals the folder store's, filters included.
    let q = queries(&files);
    let q: Vec<&str> = q.iter().map(String::as_str).collect();
    let mut args = q.clone();
    args.extend(["--top-k", "10"]);
    let from_db = search(Some(&url), "slides", &args);
    let from_folder = search(None, &folder, &args);
    assert_eq!(from_db.len(), q.len() / 2);
    for (a, b) in from_db.iter().zip(&from_folder) {
        assert_same_ranking(a, b);
    }
    let median: i64 = pg
        .sql("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY size) FROM slides")
        .parse()
        .unwrap();
    let filter = format!("size >= {median} and image_path like '%img1%'");
    let mut args = q.clone();
    args.extend(["--top-k", "200", "--where", &filter]);
    let from_db = search(Some(&url), "slides", &args);
    let from_folder = search(None, &folder, &args);
    for (a, b) in from_db.iter().zip(&from_folder) {
        assert!(!ranked(a).is_empty());
        assert_same_ranking(a, b);
    }

    // HNSW (vector_cosine_ops) against exact: recall@10 at least 0.98.
    let ann = biomedclip()
        .args(["index", "ann", "--store", &url, "slides"])
        .output()
        .unwrap();
    assert!(ann.status.success(), "{}", text(&ann.stderr));
    assert_eq!(
        pg.sql("SELECT indexdef LIKE '%hnsw (img_emb vector_cosine_ops)%' FROM pg_indexes WHERE indexname = 'slides__img_hnsw'"),
        "t"
    );
    let mut args = q.clone();
    args.extend(["--top-k", "10"]);
    let exact = search(Some(&url), "slides", &args);
    args.extend(["--ann", "--ef", "64"]);
    let approx = search(Some(&url), "slides", &args);
    let (mut found, mut total) = (0, 0);
    for (e, a) in exact.iter().zip(&approx) {
        let truth: HashSet<String> = ranked(e).into_iter().map(|r| r.0).collect();
        total += truth.len();
        found += ranked(a).iter().filter(|r| truth.contains(&r.0)).count();
    }
    let recall = found as f64 / total as f64;
    assert!(recall >= 0.98, "HNSW recall@10 {recall}");
}

#[test]
fn killed_workers_resume_without_duplicates_and_updates_follow_the_files() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    let files = images(&dir, 60, 2);

    // Killed (SIGKILL) once more rows have landed, at moments spread over a transaction,
    // then run to the end.
    let mut killed_mid_run = 0;
    for i in 0..6u64 {
        let before = pg.count("scans");
        let mut child = build_args(Some(&url), "scans", &dir, &["--part-size", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(60) {
                break;
            }
            if pg.count("scans") > before {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(7 * i));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        killed_mid_run >= 3,
        "only {killed_mid_run} of 6 workers were stopped mid-run"
    );
    assert_built(
        &build_args(Some(&url), "scans", &dir, &["--part-size", "4"])
            .output()
            .unwrap(),
    );
    assert_eq!(pg.sql("SELECT count(*) FROM scans"), "60");
    assert_eq!(
        pg.sql("SELECT count(DISTINCT (blake3, image_path)) FROM scans"),
        "60"
    );
    assert_eq!(pg.sql("SELECT count(*) FROM scans__failed"), "1");

    // Update: one file changed, one deleted, two added.
    std::fs::copy(&files[5], &files[4]).unwrap();
    std::fs::remove_file(&files[6]).unwrap();
    let more = images(&tmp.path().join("more"), 2, 3);
    for (i, f) in more.iter().enumerate() {
        std::fs::copy(f, dir.join(format!("new{i}.png"))).unwrap();
    }
    let out = biomedclip()
        .args([
            "index",
            "update",
            "--model",
            &tiny_model(),
            "--store",
            &url,
            "scans",
        ])
        .output()
        .unwrap();
    assert_built(&out);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("embedded 3, dropped 2"), "{stderr}");
    assert_eq!(pg.sql("SELECT count(*) FROM scans"), "61");
    let gone = files[6].to_string_lossy();
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) FROM scans WHERE image_path = '{gone}'"
        )),
        "0"
    );
    // The changed file's row now has the new content's hash: its own image ranks it first.
    let hits = search(
        Some(&url),
        "scans",
        &["--image", &files[4].to_string_lossy(), "--top-k", "2"],
    );
    let top: HashSet<String> = ranked(&hits[0]).into_iter().map(|r| r.0).collect();
    assert!(top.contains(&*files[4].to_string_lossy()), "{}", hits[0]);
}

#[test]
fn caption_edits_relabel_rows_as_a_fresh_build_has_them() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let files = images(&tmp.path().join("images"), 8, 4);
    let csv = tmp.path().join("list.csv");
    let mut list = String::from("path,caption,stain\n");
    for (i, f) in files.iter().enumerate() {
        let stain = if i % 2 == 0 { "H&E" } else { "IHC" };
        list.push_str(&format!("{},slide {i},{stain}\n", f.display()));
    }
    std::fs::write(&csv, &list).unwrap();
    assert_built(
        &build_args(Some(&url), "figures", &csv, &[])
            .output()
            .unwrap(),
    );

    let edited = list
        .replace("slide 0,", "a renal biopsy,")
        .replacen("IHC\n", "PAS\n", 1);
    std::fs::write(&csv, edited).unwrap();
    let out = biomedclip()
        .args(["index", "update", "--model", &tiny_model(), "--store", &url])
        .arg("figures")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("embedded 0, dropped 0, relabelled 2"),
        "{stderr}"
    );
    let folder = tmp.path().join("fresh").to_string_lossy().into_owned();
    assert_built(&build_args(None, &folder, &csv, &[]).output().unwrap());
    let image = files[3].to_string_lossy().into_owned();
    for args in [
        &["--text", "a renal biopsy", "--captions", "--top-k", "8"][..],
        &["--image", &image, "--top-k", "8"],
        &["--text", "x", "--where", "stain = 'PAS'"],
    ] {
        let (a, b) = (
            search(Some(&url), "figures", args),
            search(None, &folder, args),
        );
        assert!(!ranked(&a[0]).is_empty(), "{args:?}");
        assert_same_ranking(&a[0], &b[0]);
    }
}

#[test]
fn locks_other_models_and_bad_names_get_clear_errors() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    images(&dir, 5, 4);
    assert_built(&build_args(Some(&url), "cells", &dir, &[]).output().unwrap());

    // A writer holds the collection: a second is refused, naming it.
    let mut holder = pg
        .psql()
        .args([
            "-c",
            "SELECT pg_advisory_lock(hashtext('biomedclip collection cells'), -1)",
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") == "0" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the lock was never taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = build_args(Some(&url), "cells", &dir, &[]).output().unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("collection cells") && stderr.contains("being written by another process"),
        "{stderr}"
    );

    // Names that are not plain identifiers, missing collections, unreachable servers.
    let out = build_args(Some(&url), "x; DROP TABLE cells", &dir, &[])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("lowercase"),
        "{}",
        text(&out.stderr)
    );
    let out = biomedclip()
        .args([
            "search",
            "--model",
            &tiny_model(),
            "--store",
            &url,
            "nothere",
            "--text",
            "x",
        ])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("no such collection"),
        "{}",
        text(&out.stderr)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = biomedclip()
        .args([
            "search",
            "--model",
            &tiny_model(),
            "--text",
            "x",
            "cells",
            "--store",
        ])
        .arg(format!(
            "postgres://postgres:secret@127.0.0.1:{closed}/postgres"
        ))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("127.0.0.1:{closed}")), "{stderr}");
    assert!(!stderr.contains("secret"), "the password leaked: {stderr}");
    assert_eq!(pg.sql("SELECT count(*) FROM cells"), "5");

    // A collection another model made: refused, naming both.
    pg.sql(
        "UPDATE biomedclip_collections SET manifest = jsonb_set(jsonb_set(manifest, \
         '{model,name}', '\"hf-hub:someone/other-model\"'), '{model,weights_blake3}', \
         '\"0123456789abcdef\"') WHERE name = 'cells'",
    );
    let out = biomedclip()
        .args([
            "search",
            "--model",
            &tiny_model(),
            "--store",
            &url,
            "cells",
            "--text",
            "x",
        ])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("embedded by model hf-hub:someone/other-model (weights 0123456789ab)")
            && stderr.contains(&tiny_model()),
        "{stderr}"
    );
    let out = build_args(Some(&url), "cells", &dir, &[]).output().unwrap();
    assert!(
        text(&out.stderr).contains("hf-hub:someone/other-model"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_server_searches_a_table() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    let files = images(&dir, 12, 5);
    assert_built(
        &build_args(Some(&url), "slides", &dir, &[])
            .output()
            .unwrap(),
    );
    let server = Server::start(&["--collection", &format!("slides={url}")]);

    let (status, body) = server.get("/collections");
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["name"], "slides");
    assert_eq!(list[0]["store"], "postgres");
    assert_eq!(list[0]["rows"], 12);
    assert_eq!(list[0]["failed"], 1);

    let (status, found) = server.post(
        "/search",
        &json!({"collection": "slides", "text": "a chest x-ray", "top_k": 5}),
        None,
    );
    assert_eq!(status, 200, "{found}");
    let cli = search(
        Some(&url),
        "slides",
        &["--text", "a chest x-ray", "--top-k", "5"],
    );
    assert_same_ranking(&found, &cli[0]);
    assert!(found["notice"].as_str().unwrap().contains("research"));

    let id = found["results"][0]["id"].as_u64().unwrap();
    let (status, _) = server.get(&format!("/collections/slides/items/{id}/image"));
    assert_eq!(status, 200);
    let (status, body) = server.get("/collections/slides/items/99999/image");
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.post(
        "/search",
        &json!({"collection": "slides", "text": "x", "where": "modality = 5"}),
        None,
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["param"], "where");

    // The database goes away: searches answer 503 and the server keeps serving.
    drop(pg);
    let (status, body) = server.post(
        "/search",
        &json!({"collection": "slides", "embedding": vec![0.1f32; 32]}),
        None,
    );
    assert_eq!(status, 503, "{body}");
    let (status, _) = server.get("/health");
    assert_eq!(status, 200);
    let _ = files;
}
