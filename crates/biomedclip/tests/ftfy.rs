//! The text clean against the reference on a differential corpus.
//!
//! `fixtures/text/ftfy_corpus.jsonl.gz` holds strings generated with ftfy 6.3.1 and open_clip
//! 2.23.0 (`tools/reference/make_ftfy_corpus.py`): mojibake through every codec ftfy knows,
//! partial mojibake next to text no codec explains, ligatures, full-width forms, quotes,
//! CJK, emoji, controls, entities, escapes, odd whitespace, valid text that must stay, and
//! random strings over the characters ftfy's heuristic looks at. Every string must give
//! exactly the reference's `ftfy.fix_text` output, open_clip clean and token ids.

mod common;

use std::io::{BufRead, BufReader};

use biomedclip::text::clean::clean_text;
use biomedclip::text::ftfy::fix_text;
use biomedclip::text::TextTokenizer;
use flate2::read::GzDecoder;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    input: String,
    ftfy: String,
    clean: String,
    ids: Vec<u32>,
}

fn corpus() -> Vec<Case> {
    let path = common::fixtures().join("text/ftfy_corpus.jsonl.gz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    BufReader::new(GzDecoder::new(file))
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let line = line.unwrap_or_else(|e| panic!("{} line {}: {e}", path.display(), i + 1));
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Asserts every case and reports all disagreements at once, a few of them in full.
fn assert_all(what: &str, cases: &[Case], disagrees: impl Fn(&Case) -> Option<String>) {
    let failures: Vec<String> = cases.iter().filter_map(&disagrees).collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {} strings differ from the reference, e.g.\n{}",
        failures.len(),
        cases.len(),
        failures[..failures.len().min(12)].join("\n")
    );
}

#[test]
fn corpus_is_large_and_varied() {
    let cases = corpus();
    assert!(cases.len() >= 20_000, "{} strings", cases.len());
    let changed = cases.iter().filter(|c| c.input != c.ftfy).count();
    let kept = cases.len() - changed;
    assert!(
        changed >= 5_000 && kept >= 2_000,
        "{changed} changed, {kept} kept"
    );
}

#[test]
fn fix_text_matches_ftfy_on_every_string() {
    let cases = corpus();
    assert_all("ftfy.fix_text", &cases, |c| {
        let ours = fix_text(&c.input);
        (ours != c.ftfy).then(|| {
            format!(
                "  {:?}\n    ours {:?}\n    ftfy {:?}",
                c.input, ours, c.ftfy
            )
        })
    });
}

#[test]
fn clean_and_token_ids_match_open_clip_on_every_string() {
    let cases = corpus();
    let tokenizer = TextTokenizer::from_tokenizer_json(
        &common::fixtures().join("tiny-model/tokenizer.json"),
        256,
    )
    .expect("fixture tokenizer");
    assert_all("open_clip clean", &cases, |c| {
        let ours = clean_text(&c.input);
        (ours != c.clean).then(|| {
            format!(
                "  {:?}\n    ours {:?}\n    ref  {:?}",
                c.input, ours, c.clean
            )
        })
    });
    assert_all("token ids", &cases, |c| {
        let ours = tokenizer.encode(&c.input).expect("encode");
        (ours != c.ids).then(|| format!("  {:?}\n    ours {ours:?}\n    ref  {:?}", c.input, c.ids))
    });
}
