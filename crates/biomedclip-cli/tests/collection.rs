//! `index build | update | ann` and `search` end to end on the tiny checkpoint: rankings equal
//! to `embed`'s, stopped builds that resume to the same bytes, updates, shards, locks and the
//! errors a user meets.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{fixtures, run};
use serde_json::Value;

fn model() -> String {
    fixtures().join("tiny-model").to_string_lossy().into_owned()
}

/// A folder of `n` distinct images: the fixture images, then copies with one byte of
/// trailing data changed (still decodable, a different content hash).
fn image_folder(dir: &Path, n: usize) -> Vec<PathBuf> {
    let sources: Vec<PathBuf> = [
        "rgb_photo.jpg",
        "gray_cells.jpg",
        "ihc.jpg",
        "retina.bmp",
        "rgb_photo.png",
        "small.png",
        "tall.jpg",
        "gray.png",
    ]
    .iter()
    .map(|f| fixtures().join("images").join(f))
    .collect();
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let src = &sources[i % sources.len()];
            let mut bytes = std::fs::read(src).unwrap();
            if i >= sources.len() {
                bytes.extend_from_slice(format!("copy{i}").as_bytes());
            }
            let ext = src.extension().unwrap().to_str().unwrap();
            let path = dir.join(format!("img{i:03}.{ext}"));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect()
}

fn build(out: &Path, inputs: &[&Path], extra: &[&str]) -> std::process::Output {
    let model = model();
    let out = out.to_string_lossy();
    let mut args = vec!["index", "build", "--model", &model, "--out", &out];
    args.extend_from_slice(extra);
    let inputs: Vec<String> = inputs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    args.extend(inputs.iter().map(String::as_str));
    run(&args)
}

fn search_json(dir: &Path, args: &[&str]) -> Vec<Value> {
    let model = model();
    let dir = dir.to_string_lossy();
    let mut all = vec!["search", &*dir, "--model", &model, "--json"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every file of a collection but its locks and HNSW index, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["", "img_emb", "text_emb", "metadata"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                out.insert(
                    format!("{sub}/{}", e.file_name().to_string_lossy()),
                    std::fs::read(e.path()).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn search_ranks_as_embed_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    image_folder(&images, 12);
    let col = tmp.path().join("col");
    let out = build(&col, &[&images], &["--part-size", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let query = "a histology slide";
    let model = model();
    let embedded = run(&[
        "embed",
        "--model",
        &model,
        "--text",
        query,
        "--image",
        images.to_str().unwrap(),
    ]);
    assert!(embedded.status.success());
    let lines: Vec<Value> = String::from_utf8(embedded.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let vec = |v: &Value| -> Vec<f32> {
        v["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let q = vec(&lines[0]);
    let mut expected: Vec<(String, f32)> = lines[1..]
        .iter()
        .map(|l| {
            let e = vec(l);
            let path = std::fs::canonicalize(l["input"].as_str().unwrap()).unwrap();
            (
                path.to_string_lossy().into_owned(),
                q.iter().zip(&e).map(|(a, b)| a * b).sum(),
            )
        })
        .collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1));

    let got = search_json(&col, &["--text", query, "--top-k", "12"]);
    let results = got[0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 12);
    for (i, (r, (path, score))) in results.iter().zip(&expected).enumerate() {
        let s = r["score"].as_f64().unwrap() as f32;
        assert!(
            (s - score).abs() < 1e-5,
            "rank {i}: score {s} vs embed's {score}"
        );
        // Equal scores may come in either order; distinct ones must not.
        if expected
            .iter()
            .filter(|(_, x)| (x - score).abs() < 1e-6)
            .count()
            == 1
        {
            assert_eq!(r["path"].as_str().unwrap(), path, "rank {i}");
        }
        assert_eq!(r["rank"].as_u64().unwrap() as usize, i + 1);
        assert_eq!(r["metadata"]["image_path"], r["path"]);
    }

    // The HNSW index over 12 rows finds the same top 5.
    let ann = run(&["index", "ann", col.to_str().unwrap()]);
    assert!(
        ann.status.success(),
        "{}",
        String::from_utf8_lossy(&ann.stderr)
    );
    let approx = search_json(&col, &["--text", query, "--top-k", "5", "--ann"]);
    let ids = |v: &Value| -> Vec<u64> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&approx[0]), ids(&got[0])[..5]);
}

#[test]
fn killed_builds_resume_to_the_same_collection() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    image_folder(&images, 24);
    let reference = tmp.path().join("reference");
    let out = build(&reference, &[&images], &["--part-size", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = snapshot(&reference);
    assert_eq!(
        expected
            .keys()
            .filter(|k| k.starts_with("metadata/"))
            .count(),
        12
    );

    // A seeded spread of kill times over a run's length, several kills per collection.
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = std::time::Instant::now();
    let out = build(
        &tmp.path().join("timing"),
        &[&images],
        &["--part-size", "2"],
    );
    assert!(out.status.success());
    let full = started.elapsed().as_micros() as u64;

    let mut interrupted = 0;
    let mut during_writes = 0;
    let mut collections = 0;
    while interrupted < 24 {
        collections += 1;
        let col = tmp.path().join(format!("killed{collections}"));
        for attempt in 0.. {
            let child = Command::new(env!("CARGO_BIN_EXE_biomedclip"))
                .args([
                    "index",
                    "build",
                    "--model",
                    &model(),
                    "--part-size",
                    "2",
                    "--out",
                ])
                .arg(&col)
                .arg(&images)
                .env("HF_HUB_OFFLINE", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            if attempt < 3 {
                std::thread::sleep(Duration::from_micros(next() % (full + 1)));
                // SAFETY: signalling a child this test started and has not reaped.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            }
            let status = child.wait_with_output().unwrap();
            if status.status.success() {
                break;
            }
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.status.signal(),
                Some(libc::SIGKILL),
                "a run failed on its own: {}",
                String::from_utf8_lossy(&status.stderr)
            );
            interrupted += 1;
            if mid_write(&col) {
                during_writes += 1;
            }
        }
        let got = snapshot(&col);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "collection {collections}: other files"
        );
        for (name, bytes) in &expected {
            assert!(
                got[name] == *bytes,
                "collection {collections}: {name} differs"
            );
        }
    }
    assert!(interrupted >= 20, "{interrupted} interrupted runs");
    eprintln!("{interrupted} runs killed, {during_writes} of them in the middle of writing a part");
    // Most of a run on the tiny model is writing and flushing parts, so kills land there.
    assert!(during_writes >= 1, "no kill landed during a part's write");
}

/// Whether a stopped writer left a part half written: a temporary file, or embeddings whose
/// metadata (the commit) never landed.
fn mid_write(col: &Path) -> bool {
    let names = |sub: &str| -> Vec<String> {
        std::fs::read_dir(col.join(sub))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let metadata = names("metadata");
    names("img_emb")
        .iter()
        .chain(&metadata)
        .any(|n| n.contains(".tmp-"))
        || names("img_emb").iter().any(|n| {
            let part = n.trim_start_matches("img_emb_").trim_end_matches(".npy");
            !metadata.contains(&format!("metadata_{part}.parquet"))
        })
}

fn manifest(col: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(col.join("manifest.json")).unwrap()).unwrap()
}

/// (path, blake3) of every row, sorted.
fn rows(col: &Path) -> Vec<(String, String)> {
    let all = search_json(col, &["--text", "x", "--top-k", "1000"]);
    let mut out: Vec<(String, String)> = all[0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["metadata"]["blake3"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn update_embeds_new_and_changed_files_and_drops_deleted_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    let files = image_folder(&images, 10);
    let col = tmp.path().join("col");
    assert!(build(&col, &[&images], &["--part-size", "3"])
        .status
        .success());
    assert_eq!(manifest(&col)["rows"], 10);

    // Add two, change one, delete two.
    std::fs::copy(fixtures().join("images/rgb.tif"), images.join("new1.tif")).unwrap();
    std::fs::copy(fixtures().join("images/rgb.webp"), images.join("new2.webp")).unwrap();
    let mut changed = std::fs::read(&files[3]).unwrap();
    changed.extend_from_slice(b"changed");
    std::fs::write(&files[3], changed).unwrap();
    std::fs::remove_file(&files[0]).unwrap();
    std::fs::remove_file(&files[7]).unwrap();

    let out = run(&[
        "index",
        "update",
        col.to_str().unwrap(),
        "--model",
        &model(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("embedded 3, dropped 3"), "{stderr}");

    // The same rows as a fresh build of the folder as it is now.
    let fresh = tmp.path().join("fresh");
    assert!(build(&fresh, &[&images], &["--part-size", "3"])
        .status
        .success());
    assert_eq!(rows(&col), rows(&fresh));
    assert_eq!(manifest(&col)["rows"], 10);
    // A later build from other inputs (or in other parts) is refused: update would forget them.
    let out = build(&col, &[&fresh], &["--part-size", "3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("a later build must repeat"),
        "{stderr}"
    );
    let out = build(&col, &[&images], &["--part-size", "4"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--part-size 3, this run gives 4"));
    // An update with nothing to do embeds nothing.
    let out = run(&[
        "index",
        "update",
        col.to_str().unwrap(),
        "--model",
        &model(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("embedded 0, dropped 0, relabelled 0, wrote 0"));
}

#[test]
fn shards_fill_one_collection_together() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    image_folder(&images, 16);
    let whole = tmp.path().join("whole");
    assert!(build(&whole, &[&images], &["--part-size", "3"])
        .status
        .success());
    let col = tmp.path().join("sharded");
    let spawn = |k: &str| {
        Command::new(env!("CARGO_BIN_EXE_biomedclip"))
            .args([
                "index",
                "build",
                "--model",
                &model(),
                "--part-size",
                "3",
                "--shard",
                k,
                "--out",
            ])
            .arg(&col)
            .arg(&images)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let workers = [spawn("1/2"), spawn("2/2")];
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(rows(&col), rows(&whole));
    let parts: Vec<String> = manifest(&col)["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["shard"].as_str().unwrap().to_string())
        .collect();
    assert!(
        parts.contains(&"1/2".to_string()) && parts.contains(&"2/2".to_string()),
        "{parts:?}"
    );
    // The same score for every file as in the unsharded collection (ids differ: the parts
    // are in another order).
    let strip = |v: &Value| -> BTreeMap<String, f64> {
        v["results"]
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
    };
    let a = search_json(&col, &["--text", "x-ray", "--top-k", "16"]);
    let b = search_json(&whole, &["--text", "x-ray", "--top-k", "16"]);
    assert_eq!(strip(&a[0]), strip(&b[0]));
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    image_folder(&images, 3);
    let col = tmp.path().join("col");
    assert!(build(&col, &[&images], &[]).status.success());
    // Hold the collection's lock as a running writer does.
    let lock = std::fs::File::open(col.join(".locks/collection.lock")).unwrap();
    lock.lock().unwrap();
    let out = build(&col, &[&images], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the collection is being written by another process"),
        "{stderr}"
    );
    assert!(stderr.contains("collection.lock"), "{stderr}");
    let out = run(&[
        "index",
        "update",
        col.to_str().unwrap(),
        "--model",
        &model(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("being written by another process"));
    drop(lock);
    assert!(build(&col, &[&images], &[]).status.success());
}

#[test]
fn other_models_corrupt_parts_and_bad_filters_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    image_folder(&images, 4);
    let col = tmp.path().join("col");
    assert!(build(&col, &[&images], &["--part-size", "2"])
        .status
        .success());
    let search = |extra: &[&str]| {
        let model = model();
        let mut args = vec!["search", col.to_str().unwrap(), "--model", &model];
        args.extend_from_slice(extra);
        let out = run(&args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A collection another model made: both are named.
    let path = col.join("manifest.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let mut m: Value = serde_json::from_str(&original).unwrap();
    m["model"]["name"] = "hf-hub:someone/other-model".into();
    m["model"]["weights_blake3"] = "0123456789abcdef".repeat(4).into();
    std::fs::write(&path, m.to_string()).unwrap();
    let (ok, err) = search(&["--text", "x"]);
    assert!(!ok);
    assert!(
        err.contains("embedded by model hf-hub:someone/other-model (weights 0123456789ab)"),
        "{err}"
    );
    assert!(err.contains("tiny-model"), "{err}");
    let out = build(&col, &[&images], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("hf-hub:someone/other-model"));
    std::fs::write(&path, &original).unwrap();

    // A filter naming a column that does not exist.
    let (ok, err) = search(&["--text", "x", "--where", "modalty = 'CT'"]);
    assert!(
        !ok && err.contains("no column \"modalty\"") && err.contains("modality"),
        "{err}"
    );

    // A truncated embeddings file.
    let npy = col.join("img_emb/img_emb_1.npy");
    let bytes = std::fs::read(&npy).unwrap();
    std::fs::write(&npy, &bytes[..bytes.len() - 10]).unwrap();
    let (ok, err) = search(&["--text", "x"]);
    assert!(
        !ok && err.contains("img_emb_1.npy") && err.contains("truncated"),
        "{err}"
    );
    let out = build(&col, &[&images], &["--part-size", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("img_emb_1.npy"),
        "{stderr}"
    );
    std::fs::write(&npy, &bytes).unwrap();

    // Metadata that is not Parquet.
    std::fs::write(col.join("metadata/metadata_0.parquet"), b"not parquet").unwrap();
    let (ok, err) = search(&["--text", "x"]);
    assert!(
        !ok && err.contains("metadata_0.parquet") && err.contains("Parquet"),
        "{err}"
    );

    // No collection at all.
    let (ok, err) = {
        let out = run(&[
            "search",
            tmp.path().to_str().unwrap(),
            "--model",
            &model(),
            "--text",
            "x",
        ]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(!ok && err.contains("no collection here"), "{err}");
}

#[test]
fn csv_inputs_keep_their_columns_and_captions_are_searchable() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    let files = image_folder(&images, 4);
    let csv = tmp.path().join("list.csv");
    let mut text = String::from("path,caption,stain\n");
    for (i, f) in files.iter().enumerate() {
        let rel = f
            .strip_prefix(tmp.path())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let stain = if i % 2 == 0 { "H&E" } else { "IHC" };
        text.push_str(&format!(
            "{rel},\"figure {i}, a \"\"{stain}\"\" slide\",{stain}\n"
        ));
    }
    // A DICOM file through the CSV too, for its tags.
    let dcm = fixtures().join("dicom/CT_small.dcm");
    text.push_str(&format!("{},a CT slice,\n", dcm.display()));
    std::fs::write(&csv, text).unwrap();
    let col = tmp.path().join("col");
    let out = build(&col, &[&csv], &["--dtype", "f16"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = manifest(&col);
    assert_eq!(m["dtype"], "f16");
    assert_eq!(m["captions"], true);
    assert_eq!(m["extra_columns"], serde_json::json!(["stain"]));
    assert!(col.join("text_emb/text_emb_0.npy").is_file());

    let ihc = search_json(
        &col,
        &["--text", "x", "--top-k", "10", "--where", "stain = 'IHC'"],
    );
    let got = ihc[0]["results"].as_array().unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r["metadata"]["stain"] == "IHC"));
    let ct = search_json(&col, &["--text", "x", "--where", "modality = 'CT'"]);
    let got = ct[0]["results"].as_array().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["metadata"]["caption"], "a CT slice");
    // Searching the captions: a caption's own text ranks it first.
    let own = search_json(
        &col,
        &["--text", "a CT slice", "--captions", "--top-k", "1"],
    );
    assert_eq!(own[0]["results"][0]["metadata"]["caption"], "a CT slice");
    assert!(own[0]["results"][0]["score"].as_f64().unwrap() > 0.999);

    // The CSV edited: one caption and one stain change. `index update` relabels the two
    // rows (re-embedding the caption, not the images) and ends as a fresh build does.
    let edited = std::fs::read_to_string(&csv)
        .unwrap()
        .replace("figure 0, a \"\"H&E\"\" slide", "a renal biopsy")
        .replacen("IHC\n", "PAS\n", 1);
    std::fs::write(&csv, edited).unwrap();
    let model = model();
    let out = run(&["index", "update", "--model", &model, &col.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("embedded 0, dropped 0, relabelled 2"),
        "{stderr}"
    );
    let fresh = tmp.path().join("fresh");
    assert!(build(&fresh, &[&csv], &["--dtype", "f16"]).status.success());
    for args in [
        &["--text", "a renal biopsy", "--captions", "--top-k", "5"][..],
        &["--text", "a renal biopsy", "--top-k", "5"],
        &["--text", "x", "--top-k", "5", "--where", "stain = 'PAS'"],
    ] {
        let (updated, fresh) = (search_json(&col, args), search_json(&fresh, args));
        let (a, b) = (
            updated[0]["results"].as_array().unwrap(),
            fresh[0]["results"].as_array().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{args:?}");
        for (a, b) in a.iter().zip(b) {
            assert_eq!(a["path"], b["path"], "{args:?}");
            assert_eq!(a["metadata"], b["metadata"], "{args:?}");
            let (x, y) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
            assert!((x - y).abs() < 1e-5, "{args:?}: {x} vs {y}");
        }
    }
    let pas = search_json(&col, &["--text", "x", "--where", "stain = 'PAS'"]);
    assert_eq!(pas[0]["results"].as_array().unwrap().len(), 1);
    let renal = search_json(
        &col,
        &["--text", "a renal biopsy", "--captions", "--top-k", "1"],
    );
    assert_eq!(
        renal[0]["results"][0]["metadata"]["caption"],
        "a renal biopsy"
    );
    assert!(renal[0]["results"][0]["score"].as_f64().unwrap() > 0.999);
}

#[test]
fn the_rendering_is_recorded_and_another_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    image_folder(&images, 3);
    let col = tmp.path().join("col");
    let out = build(&col, &[&images], &["--window", "lung"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = manifest(&col);
    assert_eq!(m["rendering"]["window"], "-600,1500");
    assert_eq!(m["rendering"]["reference_16bit"], false);
    assert!(m["limits"]["max_image_pixels"].as_u64().unwrap() > 0);

    // Another rendering would mix incomparable embeddings: refused, naming both.
    let out = build(&col, &[&images], &["--window", "brain"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rendered with --window -600,1500, this run uses --window 40,80"),
        "{err}"
    );
    // `index update` takes the recorded rendering when given none.
    std::fs::copy(fixtures().join("images/gray.png"), images.join("new.png")).unwrap();
    let out = run(&[
        "index",
        "update",
        "--model",
        &model(),
        col.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(manifest(&col)["rows"], 4);
    assert_eq!(manifest(&col)["rendering"]["window"], "-600,1500");
}

#[test]
fn a_collection_written_from_embeddings_is_not_updated_from_a_listing() {
    use biomedclip_collection::manifest::{Manifest, ModelId};
    use biomedclip_collection::metadata::{Columns, Row};
    use biomedclip_collection::npy::Dtype;
    use biomedclip_collection::FolderWriter;

    let tmp = tempfile::tempdir().unwrap();
    let model_id = ModelId {
        name: "elsewhere".into(),
        weights_blake3: "0".repeat(64),
    };
    let manifest = Manifest::new(model_id, "f32", 2, Dtype::F32, &Columns::default());
    let mut writer = FolderWriter::open(tmp.path(), &manifest).unwrap();
    let row = Row {
        image_path: "/elsewhere/0.png".into(),
        caption: None,
        blake3: "0".repeat(64),
        size: 1,
        dicom: vec![None; 6],
        extra: Vec::new(),
    };
    writer.append(&[row], &[0.6, 0.8], None, &[]).unwrap();
    drop(writer);
    let out = run(&[
        "index",
        "update",
        tmp.path().to_str().unwrap(),
        "--model",
        &model(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("records no inputs to list again"),
        "{stderr}"
    );
    // The row is still there.
    assert_eq!(manifest_rows(tmp.path()), 1);

    // A collection built from inputs is not written into from elsewhere: its next update
    // would drop rows it cannot list.
    let images = tmp.path().join("images");
    image_folder(&images, 2);
    let built = tmp.path().join("built");
    assert!(build(&built, &[&images], &[]).status.success());
    let e = FolderWriter::open(&built, &manifest)
        .unwrap_err()
        .to_string();
    assert!(e.contains("built from inputs"), "{e}");
}

fn manifest_rows(col: &Path) -> u64 {
    manifest(col)["rows"].as_u64().unwrap()
}
