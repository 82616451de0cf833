//! Text -> token ids: open_clip's cleaning (ftfy, HTML unescaping, whitespace) in
//! [`clean`], then PubMedBERT's WordPiece tokenizer with the reference's context length in
//! [`tokenize`].

pub mod clean;
pub mod ftfy;
pub mod tokenize;

pub use tokenize::TextTokenizer;
