//! The `biomedclip` binary on the committed tiny checkpoint.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{fixtures, run};

use serde_json::Value;

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("golden/golden.json")).unwrap())
        .unwrap()
}

fn path(p: PathBuf) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn classify_json_matches_the_reference_probabilities() {
    let g = golden();
    let model = path(fixtures().join("tiny-model"));
    let labels: Vec<&str> = g["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let images = ["ihc.jpg", "gray.png", "rgba.png"];
    let mut args = vec!["classify", "--model", &model, "--json"];
    for l in &labels {
        args.extend(["--label", l]);
    }
    let image_paths: Vec<String> = images
        .iter()
        .map(|f| path(fixtures().join("images").join(f)))
        .collect();
    args.extend(image_paths.iter().map(String::as_str));
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = json.as_array().unwrap();
    assert_eq!(results.len(), images.len());
    for (r, file) in results.iter().zip(images) {
        assert!(r["image"].as_str().unwrap().ends_with(file));
        let reference = g["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["file"] == file)
            .unwrap();
        let scores = r["scores"].as_array().unwrap();
        assert_eq!(scores.len(), labels.len());
        let probs: Vec<f64> = scores
            .iter()
            .map(|s| s["probability"].as_f64().unwrap())
            .collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]), "sorted high to low");
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-5);
        for s in scores {
            let i = labels
                .iter()
                .position(|l| *l == s["label"].as_str().unwrap())
                .unwrap();
            let expected = reference["probabilities"][i].as_f64().unwrap();
            assert!(
                (s["probability"].as_f64().unwrap() - expected).abs() <= 1e-4,
                "{file}"
            );
        }
    }
}

#[test]
fn classify_text_output_reports_bad_images_and_continues() {
    let model = path(fixtures().join("tiny-model"));
    let labels = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(labels.path(), "chest X-ray\n\nbrain MRI\npie chart\n").unwrap();
    let good = path(fixtures().join("images/gray.png"));
    let bad = path(fixtures().join("images/not_an_image.png"));
    let out = run(&[
        "classify",
        "--model",
        &model,
        "--labels-file",
        labels.path().to_str().unwrap(),
        "--top-k",
        "2",
        &bad,
        &good,
    ]);
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("not_an_image.png"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "gray.png:");
    assert_eq!(lines.len(), 4, "{stdout}");
}

#[test]
fn embed_writes_one_normalised_line_per_input_in_order() {
    let model = path(fixtures().join("tiny-model"));
    let img = path(fixtures().join("images/ihc.jpg"));
    let out = run(&[
        "embed",
        "--model",
        &model,
        "--text",
        "chest X-ray",
        "--image",
        &img,
        "--text",
        "",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["text", "image", "text"]);
    assert_eq!(lines[0]["input"], "chest X-ray");
    assert_eq!(lines[1]["input"], img.as_str());
    for l in &lines {
        let e: Vec<f64> = l["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(e.len(), 32);
        assert!((e.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-5);
    }
    let g = golden();
    let reference = g["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == "ihc.jpg")
        .unwrap();
    for (a, b) in lines[1]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .zip(reference["embedding"].as_array().unwrap())
    {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-4);
    }
}

#[test]
fn missing_model_and_offline_hub_explain_what_to_do() {
    let out = run(&["embed", "--model", "/no/such/model", "--text", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/model"));

    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_biomedclip"))
        .args(["embed", "--text", "x"])
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--model /path/to/dir"), "{stderr}");
}

#[test]
fn cached_hub_model_loads_without_network() {
    // A Hugging Face cache laid out as hf-hub writes it: refs/main -> snapshots/<sha>/files.
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--example--tiny-biomedclip");
    let snap = repo.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    for f in [
        "open_clip_config.json",
        "config.json",
        "tokenizer.json",
        "open_clip_model.safetensors",
    ] {
        std::fs::copy(fixtures().join("tiny-model").join(f), snap.join(f)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_biomedclip"))
        .args([
            "embed",
            "--model",
            "hf-hub:example/tiny-biomedclip",
            "--text",
            "x",
        ])
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
}
