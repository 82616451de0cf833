//! The human-readable summary of an evaluation's JSON results.

use serde_json::Value;

/// Prints the metrics, per-class recall and cache use.
pub(super) fn print_summary(r: &Value) {
    let pct = |v: &Value| {
        v.as_f64()
            .map_or("n/a".into(), |x| format!("{:.2}%", 100.0 * x))
    };
    let m = &r["metrics"];
    match r["task"].as_str() {
        Some("retrieval") => {
            println!("retrieval: {} images, {} captions", m["images"], m["texts"]);
            for dir in ["image_to_text", "text_to_image"] {
                let parts: Vec<String> = m[dir]
                    .as_object()
                    .map(|o| o.iter().map(|(k, v)| format!("{k} {}", pct(v))).collect())
                    .unwrap_or_default();
                println!("  {dir}: {}", parts.join("  "));
            }
        }
        Some(task) => {
            if task == "linear-probe" {
                println!(
                    "linear probe: train {} / val {} / test {} ({}), C = {}",
                    r["sizes"]["train"],
                    r["sizes"]["val"],
                    r["sizes"]["test"],
                    r["split"].as_str().unwrap_or(""),
                    r["C"]
                );
            } else {
                println!("zero-shot: {} images", m["samples"]);
            }
            println!("  top-1 accuracy     {}", pct(&m["top1"]));
            println!("  top-5 accuracy     {}", pct(&m["top5"]));
            println!("  balanced accuracy  {}", pct(&m["balanced_accuracy"]));
            for c in m["per_class_recall"].as_array().into_iter().flatten() {
                println!(
                    "    {:<30} {}",
                    c["class"].as_str().unwrap_or(""),
                    pct(&c["recall"])
                );
            }
        }
        None => {}
    }
    let cache = &r["cache"];
    if cache["dir"].is_string() {
        println!(
            "  embeddings: {} from cache, {} encoded",
            cache["hits"], cache["encoded"]
        );
    }
}
