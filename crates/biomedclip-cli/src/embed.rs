//! `biomedclip embed`: one JSON line per input, in the order given.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::args::{Embed, EmbedInput};

/// A progress bar on stderr for batches worth watching (hidden when stderr is not a terminal).
pub fn progress_bar(len: usize, what: &str) -> ProgressBar {
    if len < 16 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} ({{eta}} left)"))
            .expect("valid template"),
    );
    bar
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    input: std::borrow::Cow<'a, str>,
    embedding: &'a [f32],
}

/// Embeds every input and writes JSON Lines to stdout.
pub fn run(args: Embed) -> Result<ExitCode> {
    let mut model = args.common.load_model()?;
    model.set_rendering(args.image_options.rendering);
    let images: Vec<PathBuf> = args
        .inputs
        .iter()
        .filter_map(|i| match i {
            EmbedInput::Image(p) => Some(p.clone()),
            EmbedInput::Text(_) => None,
        })
        .collect();
    let texts: Vec<&str> = args
        .inputs
        .iter()
        .filter_map(|i| match i {
            EmbedInput::Text(t) => Some(t.as_str()),
            EmbedInput::Image(_) => None,
        })
        .collect();
    let text_emb = model.encode_texts(&texts)?;
    let bar = progress_bar(images.len(), "images");
    let image_emb = model.encode_image_files_with_progress(&images, |n| bar.inc(n as u64));
    bar.finish_and_clear();

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut ti, mut ii) = (text_emb.iter(), image_emb.iter());
    let mut failed = 0;
    for input in &args.inputs {
        let line = match input {
            EmbedInput::Text(t) => Line {
                kind: "text",
                input: std::borrow::Cow::Borrowed(t),
                embedding: ti.next().expect("one embedding per text"),
            },
            EmbedInput::Image(p) => match ii.next().expect("one result per image") {
                Ok(e) => Line {
                    kind: "image",
                    input: p.to_string_lossy(),
                    embedding: e,
                },
                Err(e) => {
                    eprintln!("error: {e}");
                    failed += 1;
                    continue;
                }
            },
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    if failed > 0 {
        eprintln!("{failed} of {} images failed", images.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
