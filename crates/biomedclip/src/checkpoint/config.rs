//! What a model is made of: `open_clip_config.json`, the optional text-tower `config.json`,
//! and the tower sizes read from the checkpoint's tensor shapes.
//!
//! Mirrors open_clip 2.23.0 `model_configs/*.json` and `CLIPVisionCfg`/`CLIPTextCfg`
//! (`src/open_clip/model.py`): both the `hf_*` keys and the older `proj`/`pooler_type` keys are read.

use std::path::Path;

use serde::Deserialize;

use crate::checkpoint::names;
use crate::checkpoint::weights::Weights;
use crate::error::{Error, Result};

// The constants are written exactly as open_clip's `constants.py` writes them.
#[allow(clippy::excessive_precision)]
/// CLIP's normalisation constants, open_clip's `OPENAI_DATASET_MEAN`/`STD` and BiomedCLIP's values.
pub const DEFAULT_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// See [`DEFAULT_MEAN`].
#[allow(clippy::excessive_precision)]
pub const DEFAULT_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The parsed `open_clip_config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct OpenClipConfig {
    /// Architecture description.
    pub model_cfg: ModelCfg,
    /// Image preprocessing; defaults to CLIP's when absent.
    #[serde(default)]
    pub preprocess_cfg: PreprocessCfg,
}

/// `model_cfg` of `open_clip_config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelCfg {
    /// Dimension of the joint embedding space (512 for BiomedCLIP).
    pub embed_dim: usize,
    /// Image tower description.
    pub vision_cfg: VisionCfg,
    /// Text tower description.
    pub text_cfg: TextCfg,
}

/// `vision_cfg`: a timm ViT wrapped by open_clip's `TimmModel`.
#[derive(Debug, Clone, Deserialize)]
pub struct VisionCfg {
    /// timm architecture name, e.g. `vit_base_patch16_224`.
    #[serde(default)]
    pub timm_model_name: Option<String>,
    /// timm pooling: `""` or `"token"` take the class token.
    #[serde(default)]
    pub timm_pool: Option<String>,
    /// Projection after the trunk: `linear` or `none`.
    #[serde(default)]
    pub timm_proj: Option<String>,
    /// Whether the projection has a bias.
    #[serde(default)]
    pub timm_proj_bias: bool,
    /// Input resolution (square).
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    /// Width of one attention head; the head count is `width / head_width`.
    #[serde(default = "default_head_width")]
    pub head_width: usize,
    /// LayerNorm epsilon of the trunk (timm ViT: 1e-6).
    #[serde(default = "default_vision_eps")]
    pub layer_norm_eps: f64,
}

/// `text_cfg`: a Hugging Face BERT wrapped by open_clip's `HFTextEncoder`.
#[derive(Debug, Clone, Deserialize)]
pub struct TextCfg {
    /// Hugging Face model name of the text tower.
    #[serde(default)]
    pub hf_model_name: Option<String>,
    /// Hugging Face tokenizer name.
    #[serde(default)]
    pub hf_tokenizer_name: Option<String>,
    /// Projection type (`mlp`, `linear` or none), new spelling.
    #[serde(default)]
    pub hf_proj_type: Option<String>,
    /// Projection type, older spelling.
    #[serde(default)]
    pub proj: Option<String>,
    /// Pooler type, new spelling.
    #[serde(default)]
    pub hf_pooler_type: Option<String>,
    /// Pooler type, older spelling.
    #[serde(default)]
    pub pooler_type: Option<String>,
    /// Maximum number of tokens, `[CLS]` and `[SEP]` included.
    #[serde(default = "default_context_length")]
    pub context_length: usize,
}

/// `preprocess_cfg` of `open_clip_config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct PreprocessCfg {
    /// Per-channel mean subtracted after scaling to [0, 1].
    #[serde(default = "default_mean")]
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    #[serde(default = "default_std")]
    pub std: [f32; 3],
    /// Resampling filter: `bicubic` (default) or `bilinear`.
    #[serde(default = "default_interpolation")]
    pub interpolation: String,
    /// Resize mode: only `shortest` (the default) is supported.
    #[serde(default = "default_resize_mode")]
    pub resize_mode: String,
}

impl Default for PreprocessCfg {
    fn default() -> Self {
        PreprocessCfg {
            mean: DEFAULT_MEAN,
            std: DEFAULT_STD,
            interpolation: default_interpolation(),
            resize_mode: default_resize_mode(),
        }
    }
}

fn default_image_size() -> usize {
    224
}
fn default_head_width() -> usize {
    64
}
fn default_vision_eps() -> f64 {
    1e-6
}
fn default_context_length() -> usize {
    256
}
fn default_mean() -> [f32; 3] {
    DEFAULT_MEAN
}
fn default_std() -> [f32; 3] {
    DEFAULT_STD
}
fn default_interpolation() -> String {
    "bicubic".into()
}
fn default_resize_mode() -> String {
    "shortest".into()
}

/// How the text tower turns token states into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextPooling {
    /// `last_hidden_state[:, 0]` (BiomedCLIP).
    ClsLastHiddenState,
    /// Mean of the unmasked token states.
    Mean,
}

/// How the text tower maps its width to the joint embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextProjection {
    /// `Linear(d, (d+e)/2, bias=False) -> GELU -> Linear((d+e)/2, e, bias=False)` (BiomedCLIP).
    Mlp,
    /// `Linear(d, e, bias=False)`.
    Linear,
}

impl TextCfg {
    /// The pooling, from `hf_pooler_type` or the older `pooler_type`.
    pub fn pooling(&self, path: &Path) -> Result<TextPooling> {
        let name = self
            .hf_pooler_type
            .as_deref()
            .or(self.pooler_type.as_deref())
            .unwrap_or("mean_pooler");
        match name {
            "cls_last_hidden_state_pooler" => Ok(TextPooling::ClsLastHiddenState),
            "mean_pooler" => Ok(TextPooling::Mean),
            other => Err(Error::Config {
                path: path.into(),
                reason: format!(
                    "text pooler `{other}` is not supported (supported: \
                     cls_last_hidden_state_pooler, mean_pooler)"
                ),
            }),
        }
    }

    /// The projection, from `hf_proj_type` or the older `proj`.
    pub fn projection(&self, path: &Path) -> Result<TextProjection> {
        let name = self
            .hf_proj_type
            .as_deref()
            .or(self.proj.as_deref())
            .unwrap_or("mlp");
        match name {
            "mlp" => Ok(TextProjection::Mlp),
            "linear" => Ok(TextProjection::Linear),
            other => Err(Error::Config {
                path: path.into(),
                reason: format!("text projection `{other}` is not supported (mlp, linear)"),
            }),
        }
    }
}

impl OpenClipConfig {
    /// Reads and validates `open_clip_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: OpenClipConfig = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: path.into(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| Error::Config {
            path: path.into(),
            reason,
        };
        let pool = cfg.model_cfg.vision_cfg.timm_pool.as_deref().unwrap_or("");
        if !(pool.is_empty() || pool == "token") {
            return Err(bad(format!(
                "vision_cfg.timm_pool `{pool}` is not supported (\"\" or \"token\")"
            )));
        }
        let proj = cfg
            .model_cfg
            .vision_cfg
            .timm_proj
            .as_deref()
            .unwrap_or("linear");
        if !(proj == "linear" || proj == "none") {
            return Err(bad(format!(
                "vision_cfg.timm_proj `{proj}` is not supported (linear, none)"
            )));
        }
        let p = &cfg.preprocess_cfg;
        if p.resize_mode != "shortest" {
            return Err(bad(format!(
                "preprocess_cfg.resize_mode `{}` is not supported (shortest)",
                p.resize_mode
            )));
        }
        if !(p.interpolation == "bicubic" || p.interpolation == "bilinear") {
            return Err(bad(format!(
                "preprocess_cfg.interpolation `{}` is not supported (bicubic, bilinear)",
                p.interpolation
            )));
        }
        if p.std.iter().any(|s| *s <= 0.0) {
            return Err(bad("preprocess_cfg.std must be positive".into()));
        }
        cfg.model_cfg.text_cfg.pooling(path)?;
        cfg.model_cfg.text_cfg.projection(path)?;
        Ok(cfg)
    }
}

/// Optional Hugging Face `config.json` of the text tower (a `BertConfig`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct BertJsonConfig {
    /// Number of attention heads.
    pub num_attention_heads: Option<usize>,
    /// LayerNorm epsilon.
    pub layer_norm_eps: Option<f64>,
    /// Activation; only exact `gelu` is supported.
    pub hidden_act: Option<String>,
    /// Id of the padding token.
    pub pad_token_id: Option<u32>,
}

impl BertJsonConfig {
    /// Reads a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: BertJsonConfig = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: path.into(),
            reason: e.to_string(),
        })?;
        if let Some(act) = &cfg.hidden_act {
            if act != "gelu" {
                return Err(Error::Config {
                    path: path.into(),
                    reason: format!("hidden_act `{act}` is not supported (gelu)"),
                });
            }
        }
        Ok(cfg)
    }
}

/// Dimensions of the image tower, read from the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionDims {
    /// Token width (768 for ViT-B).
    pub width: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Hidden width of the MLP.
    pub mlp_width: usize,
    /// Patch side in pixels.
    pub patch: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
    /// Whether a projection head exists, and whether it has a bias.
    pub proj: Option<bool>,
}

/// Dimensions of the text tower, read from the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TextDims {
    /// Vocabulary size.
    pub vocab: usize,
    /// Hidden width (768 for BERT-base).
    pub hidden: usize,
    /// Number of layers.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Hidden width of the feed-forward block.
    pub intermediate: usize,
    /// Number of learned positions.
    pub max_positions: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
    /// Pooling.
    pub pooling: TextPooling,
    /// Projection.
    pub projection: TextProjection,
}

/// Everything needed to build the model: the JSON config plus the sizes found in the checkpoint.
#[derive(Debug, Clone)]
pub struct ModelDims {
    /// Joint embedding dimension.
    pub embed_dim: usize,
    /// Image tower.
    pub vision: VisionDims,
    /// Text tower.
    pub text: TextDims,
}

/// How many consecutive layers `0, 1, ...` have the tensor `probe(i)`.
fn count_layers(weights: &Weights, probe: impl Fn(usize) -> String) -> usize {
    (0..).take_while(|&i| weights.contains(&probe(i))).count()
}

impl ModelDims {
    /// Reads the tower sizes from the checkpoint's tensor shapes; head counts come from
    /// `vision_cfg.head_width` and the text tower's `config.json` (else width / 64).
    pub fn infer(
        cfg: &OpenClipConfig,
        cfg_path: &Path,
        bert: Option<&BertJsonConfig>,
        weights: &Weights,
    ) -> Result<Self> {
        let vcfg = &cfg.model_cfg.vision_cfg;
        let patch_key = names::weight(names::vision::PATCH_EMBED);
        let pe = weights.shape_of(&patch_key, 4)?;
        let (width, patch) = (pe[0], pe[2]);
        if pe[1] != 3 || pe[2] != pe[3] {
            return Err(weights.shape_error(&patch_key, vec![width, 3, patch, patch], pe));
        }
        let block_probe = |i| names::weight(&names::vision::block(i).qkv());
        let depth = count_layers(weights, block_probe);
        if depth == 0 {
            return Err(weights.missing(&block_probe(0)));
        }
        let fc1 = weights.shape_of(&names::weight(&names::vision::block(0).fc1()), 2)?;
        if vcfg.head_width == 0 || width % vcfg.head_width != 0 {
            return Err(Error::Config {
                path: cfg_path.into(),
                reason: format!(
                    "vision width {width} is not a multiple of vision_cfg.head_width {}",
                    vcfg.head_width
                ),
            });
        }
        let proj = match vcfg.timm_proj.as_deref().unwrap_or("linear") {
            "none" => None,
            _ => Some(vcfg.timm_proj_bias),
        };
        let vision = VisionDims {
            width,
            depth,
            heads: width / vcfg.head_width,
            mlp_width: fc1[0],
            patch,
            image_size: vcfg.image_size,
            eps: vcfg.layer_norm_eps,
            proj,
        };

        let tcfg = &cfg.model_cfg.text_cfg;
        let emb = weights.shape_of(&names::weight(names::text::WORD_EMBEDDINGS), 2)?;
        let (vocab, hidden) = (emb[0], emb[1]);
        let pos = weights.shape_of(&names::weight(names::text::POSITION_EMBEDDINGS), 2)?;
        let layer_probe = |i| names::weight(&names::text::layer(i).attention("query"));
        let layers = count_layers(weights, layer_probe);
        if layers == 0 {
            return Err(weights.missing(&layer_probe(0)));
        }
        let inter = weights.shape_of(&names::weight(&names::text::layer(0).intermediate()), 2)?;
        let heads = bert
            .and_then(|b| b.num_attention_heads)
            .unwrap_or((hidden / 64).max(1));
        if heads == 0 || hidden % heads != 0 {
            return Err(Error::Config {
                path: cfg_path.into(),
                reason: format!("text width {hidden} is not divisible by {heads} heads"),
            });
        }
        let text = TextDims {
            vocab,
            hidden,
            layers,
            heads,
            intermediate: inter[0],
            max_positions: pos[0],
            eps: bert.and_then(|b| b.layer_norm_eps).unwrap_or(1e-12),
            pooling: tcfg.pooling(cfg_path)?,
            projection: tcfg.projection(cfg_path)?,
        };
        Ok(ModelDims {
            embed_dim: cfg.model_cfg.embed_dim,
            vision,
            text,
        })
    }
}
