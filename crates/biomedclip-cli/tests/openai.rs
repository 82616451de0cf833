//! The official `openai` Python client, unchanged, against `biomedclip serve`
//! (`tools/serve/openai_client.py`): a text and an image, equal to `biomedclip embed`.
//!
//! Runs the Python in `BIOMEDCLIP_PYTHON` (default `python3`); without the `openai` package
//! the test says so and passes, unless `BIOMEDCLIP_REQUIRE_OPENAI=1` (set by CI).

mod serving;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use serving::*;

#[test]
fn the_openai_client_embeds_a_text_and_an_image() {
    let python = std::env::var("BIOMEDCLIP_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_client = Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_client {
        assert!(
            std::env::var_os("BIOMEDCLIP_REQUIRE_OPENAI").is_none(),
            "{python} cannot import openai (BIOMEDCLIP_REQUIRE_OPENAI)"
        );
        eprintln!(
            "SKIPPED: {python} has no `openai` (pip install -r tools/serve/requirements.txt)"
        );
        return;
    }
    let server = Server::start(&[]);
    let picture = image("ihc.jpg");
    let text = "hematoxylin and eosin histopathology";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/serve/openai_client.py");
    let out = Command::new(&python)
        .arg(script)
        .args([&server.url, picture.to_str().unwrap(), text])
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (images, texts) = cli_embed(&[picture], &[text]);
    assert!(cosine(&floats(&got["text"]), &texts[0]) >= 0.999999);
    assert!(cosine(&floats(&got["image"]), &images[0]) >= 0.999999);
}
