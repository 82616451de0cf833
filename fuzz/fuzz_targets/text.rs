//! Text prompts: the ftfy/html clean and the WordPiece tokenizer (tiny model's vocab.txt).
#![no_main]

use std::sync::OnceLock;

use biomedclip::text::clean::{clean_text, ftfy_fix_text, html_unescape};
use biomedclip::text::TextTokenizer;
use libfuzzer_sys::fuzz_target;

/// The tokenizer and its largest id, built once.
fn tokenizer() -> &'static (TextTokenizer, u32) {
    static T: OnceLock<(TextTokenizer, u32)> = OnceLock::new();
    T.get_or_init(|| {
        let vocab = biomedclip_fuzz::fixtures().join("tiny-model/vocab.txt");
        let tok = TextTokenizer::from_vocab(&vocab, 256).expect("the tiny model's vocab.txt");
        let max_id = tok.max_id();
        (tok, max_id)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = ftfy_fix_text(&text);
    let _ = html_unescape(&text);
    let _ = clean_text(&text);
    let (tok, max_id) = tokenizer();
    if let Ok(ids) = tok.encode(&text) {
        assert!(ids.len() <= tok.context_length(), "more ids than the context length");
        assert!(ids.iter().all(|id| id <= max_id), "id out of the vocabulary");
    }
});
