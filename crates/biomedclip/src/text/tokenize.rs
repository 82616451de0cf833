//! Text -> token ids, as open_clip 2.23.0's `HFTokenizer` (`src/open_clip/tokenizer.py`) does:
//! the whitespace clean ([`super::clean`]), then `BertTokenizerFast` (uncased WordPiece) with
//! `[CLS] ... [SEP]`, truncated to the context length. The `tokenizers` crate is the library
//! behind `BertTokenizerFast`, so the same `tokenizer.json` gives the same ids.
//!
//! Padding is not applied here: the CPU engine packs sequences unpadded and the candle towers
//! pad a batch to its longest member; both give the reference's `[CLS]` output, which its
//! padding to 256 does not change.

use std::path::Path;

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};
use crate::text::clean::clean_text;

/// Tokenizer matching the reference's `HFTokenizer` for a BERT vocabulary.
pub struct TextTokenizer {
    inner: Tokenizer,
    context_length: usize,
    pad_id: u32,
}

fn tok_err(path: &Path, reason: impl ToString) -> Error {
    Error::Tokenizer {
        path: path.into(),
        reason: reason.to_string(),
    }
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("context_length", &self.context_length)
            .field("pad_id", &self.pad_id)
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_tokenizer_json(path: &Path, context_length: usize) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| tok_err(path, e))?;
        Self::finish(inner, path, context_length)
    }

    /// Builds the uncased BERT pipeline around a WordPiece `vocab.txt`, as transformers'
    /// `BertConverter` does when no `tokenizer.json` exists.
    pub fn from_vocab(path: &Path, context_length: usize) -> Result<Self> {
        let vocab = WordPiece::read_file(&path.to_string_lossy()).map_err(|e| tok_err(path, e))?;
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| tok_err(path, format!("vocabulary has no {t} token")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .filter(|t| vocab.contains_key(**t))
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| tok_err(path, e))?;
        let mut inner = Tokenizer::new(model);
        inner
            .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
            .map_err(|e| tok_err(path, e))?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
        inner
            .add_special_tokens(specials)
            .map_err(|e| tok_err(path, e))?;
        Self::finish(inner, path, context_length)
    }

    fn finish(mut inner: Tokenizer, path: &Path, context_length: usize) -> Result<Self> {
        if context_length < 2 {
            return Err(tok_err(path, "context length must be at least 2"));
        }
        let pad_id = inner
            .token_to_id("[PAD]")
            .ok_or_else(|| tok_err(path, "vocabulary has no [PAD] token"))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: context_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| tok_err(path, e))?;
        inner.with_padding(None);
        Ok(TextTokenizer {
            inner,
            context_length,
            pad_id,
        })
    }

    /// The largest token id the tokenizer can produce.
    pub fn max_id(&self) -> u32 {
        self.inner
            .get_vocab(true)
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// The id of `[PAD]`, which the text tower masks out.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Maximum number of ids per text, `[CLS]` and `[SEP]` included.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Cleans and tokenizes one text: `[CLS] ... [SEP]`, at most `context_length` ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let cleaned = clean_text(text);
        let enc = self
            .inner
            .encode(cleaned.as_str(), true)
            .map_err(|e| Error::Tokenize {
                text: text.chars().take(80).collect(),
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }
}
