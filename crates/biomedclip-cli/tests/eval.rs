//! `biomedclip eval` on the committed dataset against CLIP_benchmark 1.6 and scikit-learn
//! (goldens from `tools/reference/make_eval_fixtures.py`, computed on the reference's own
//! embeddings of the same images).

mod common;

use std::process::Output;

use common::{fixtures, run};

use serde_json::Value;

/// Accuracies are ratios of counts: ours and the reference's must agree to rounding.
const ACCURACY_TOL: f64 = 1e-6;
/// The linear probe is solved by different optimisers; the issue allows 1e-3.
const PROBE_TOL: f64 = 1e-3;

fn data(p: &str) -> String {
    fixtures()
        .join("dataset")
        .join(p)
        .to_str()
        .unwrap()
        .to_string()
}

fn model() -> String {
    fixtures().join("tiny-model").to_str().unwrap().to_string()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `biomedclip eval TASK --model <tiny model> --no-cache --json REST...`.
fn eval(task: &str, rest: &[&str]) -> Output {
    let model = model();
    let mut args = vec!["eval", task, "--model", &model, "--no-cache", "--json"];
    args.extend_from_slice(rest);
    run(&args)
}

fn golden() -> Value {
    let text = std::fs::read_to_string(fixtures().join("golden/eval.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn close(what: &str, ours: &Value, reference: &Value, tol: f64) {
    let (a, b) = (ours.as_f64().unwrap(), reference.as_f64().unwrap());
    assert!((a - b).abs() <= tol, "{what}: ours {a}, reference {b}");
}

#[test]
fn zero_shot_matches_clip_benchmark_and_uses_the_cache() {
    let g = &golden()["zero_shot"];
    let cache = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let (cache_s, out_s) = (
        cache.path().to_str().unwrap(),
        out_dir.path().to_str().unwrap(),
    );
    let args = [
        "eval",
        "zero-shot",
        "--model",
        &model(),
        "--classes",
        &data("classes.json"),
        "--templates",
        &data("templates.txt"),
        "--cache-dir",
        cache_s,
        "--out",
        out_s,
        "--json",
        &data("images"),
    ];
    let first = run(&args);
    let stderr = String::from_utf8_lossy(&first.stderr).to_string();
    let r = json_of(&first);
    assert!(stderr.contains("skipped 1 non-image"), "{stderr}");
    assert_eq!(r["classes"], g["classes"]);
    let m = &r["metrics"];
    assert_eq!(m["samples"], 36);
    close("top1", &m["top1"], &g["top1"], ACCURACY_TOL);
    close("top5", &m["top5"], &g["top5"], ACCURACY_TOL);
    close(
        "balanced accuracy",
        &m["balanced_accuracy"],
        &g["balanced_accuracy"],
        ACCURACY_TOL,
    );
    for (ours, reference) in m["per_class_recall"]
        .as_array()
        .unwrap()
        .iter()
        .zip(g["per_class_recall"].as_array().unwrap())
    {
        close("recall", &ours["recall"], reference, ACCURACY_TOL);
    }
    assert_eq!(m["confusion"], g["confusion"]);
    // 36 images + 6 classes x 2 templates encoded, none cached yet.
    assert_eq!(r["cache"]["encoded"], 48);
    assert_eq!(r["cache"]["hits"], 0);

    let csv = std::fs::read_to_string(out_dir.path().join("confusion.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7);
    let png = image::open(out_dir.path().join("confusion.png")).unwrap();
    assert!(png.width() > 200 && png.height() > 200);
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join("metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["metrics"], r["metrics"]);

    // The second run reads every embedding from the cache and gives the same numbers.
    let second = json_of(&run(&args));
    assert_eq!(second["cache"]["hits"], 48);
    assert_eq!(second["cache"]["encoded"], 0);
    assert_eq!(second["metrics"], r["metrics"]);
    assert_eq!(second["precision"], "f32");

    // int8 and bf16 images are cached apart from f32 ones and from each other; the (f32)
    // texts are shared. The fixtures' top-1 labels are the same in both, so are the metrics
    // that count them.
    for precision in ["int8", "bf16"] {
        let mut reduced_args = args.to_vec();
        reduced_args.extend(["--precision", precision]);
        let reduced = json_of(&run(&reduced_args));
        assert_eq!(reduced["precision"], precision);
        assert_eq!(reduced["cache"]["encoded"], 36, "{precision}");
        assert_eq!(reduced["cache"]["hits"], 12, "{precision}");
        assert_eq!(reduced["metrics"]["confusion"], r["metrics"]["confusion"]);
    }
}

#[test]
fn retrieval_matches_clip_benchmark() {
    let g = &golden()["retrieval"];
    let r = json_of(&eval("retrieval", &[&data("retrieval.csv")]));
    let m = &r["metrics"];
    assert_eq!(
        (m["images"].as_u64(), m["texts"].as_u64()),
        (Some(36), Some(72))
    );
    for dir in ["image_to_text", "text_to_image"] {
        for k in ["R@1", "R@5", "R@10"] {
            // The reference reports float32 means.
            close(&format!("{dir} {k}"), &m[dir][k], &g[dir][k], ACCURACY_TOL);
        }
    }
}

#[test]
fn linear_probe_matches_scikit_learn() {
    let g = &golden()["linear_probe"];
    let r = json_of(&eval(
        "linear-probe",
        &[
            "--train",
            &data("train.csv"),
            "--val",
            &data("val.csv"),
            "--test",
            &data("test.csv"),
        ],
    ));
    for (ours, reference) in r["validation"]
        .as_array()
        .unwrap()
        .iter()
        .zip(g["validation"].as_array().unwrap())
    {
        close("C", &ours["C"], &reference["C"], 1e-9);
        close(
            "validation accuracy",
            &ours["accuracy"],
            &reference["accuracy"],
            PROBE_TOL,
        );
    }
    close("chosen C", &r["C"], &g["C"], 1e-9);
    close("top1", &r["metrics"]["top1"], &g["top1"], PROBE_TOL);
    close(
        "balanced accuracy",
        &r["metrics"]["balanced_accuracy"],
        &g["balanced_accuracy"],
        PROBE_TOL,
    );
}

#[test]
fn k_shot_probe_is_seeded_and_sized() {
    let probe = |seed: &str| {
        json_of(&eval(
            "linear-probe",
            &[
                "--train",
                &data("images"),
                "--test",
                &data("test.csv"),
                "--k-shot",
                "2",
                "--seed",
                seed,
            ],
        ))
    };
    let a = probe("3");
    // 6 classes: 2 per class to train, 2 of the remaining 4 to validate.
    assert_eq!(a["sizes"]["train"], 12);
    assert_eq!(a["sizes"]["val"], 12);
    assert_eq!(a["sizes"]["test"], 12);
    assert_eq!(probe("3")["metrics"], a["metrics"]);
}

#[test]
fn unreadable_images_are_reported_and_the_rest_scored() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("d.csv");
    let images = fixtures().join("dataset/images");
    let mut text = String::from("path,label\n");
    for (file, label) in [
        ("histology/0.jpg", "histology"),
        ("retina/0.jpg", "retina"),
        ("mri/0.dcm", "mri"),
    ] {
        text.push_str(&format!("{},{label}\n", images.join(file).display()));
    }
    text.push_str("missing.png,retina\n");
    std::fs::write(&csv, text).unwrap();
    let out = eval("zero-shot", &[csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.png"), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["metrics"]["samples"], 3);
    assert_eq!(r["failed"].as_array().unwrap().len(), 1);
}

#[test]
fn dicom_directories_frames_and_windows_reach_classify() {
    let images = fixtures().join("dataset/images");
    let out = run(&[
        "classify",
        "--model",
        &model(),
        "--label",
        "CT",
        "--label",
        "MRI",
        "--glob",
        "**/*.dcm",
        "--json",
        images.to_str().unwrap(),
    ]);
    let r = json_of(&out);
    assert_eq!(r.as_array().unwrap().len(), 12);

    let ct = fixtures().join("dicom/CT_small.dcm");
    let ct = ct.to_str().unwrap();
    let model = model();
    let classify = |extra: &[&str]| {
        let mut args = vec![
            "classify", "--model", &model, "--label", "CT", "--label", "MRI", "--json",
        ];
        args.extend_from_slice(extra);
        json_of(&run(&args))[0]["scores"][0]["probability"]
            .as_f64()
            .unwrap()
    };
    let default = classify(&[ct]);
    let lung = classify(&["--window", "lung", ct]);
    assert_ne!(default, lung, "a window changes the rendering");
    let two_frames = fixtures().join("dicom/SC_rgb_rle_2frame.dcm");
    let frame0 = format!("{}#frame=0", two_frames.display());
    let frame1 = format!("{}#frame=1", two_frames.display());
    assert_ne!(classify(&[&frame0]), classify(&[&frame1]));
    let bad = run(&[
        "classify", "--model", &model, "--label", "x", "--window", "spleen", ct,
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("mediastinum"));
}
