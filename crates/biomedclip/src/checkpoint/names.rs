//! Every tensor key of an open_clip BiomedCLIP checkpoint, in one place: the config
//! inference, the CPU engine and the candle towers all build their keys here.
//!
//! The names are those of open_clip 2.23.0's `CustomTextCLIP` state dict: the image tower
//! is timm's `VisionTransformer` under `visual.trunk` with open_clip's `visual.head.proj`,
//! the text tower Hugging Face's `BertModel` under `text.transformer` with open_clip's
//! `text.proj` (a `Linear`, or an MLP whose layers are `text.proj.0` and `text.proj.2`).

/// `{module}.weight`.
pub fn weight(module: &str) -> String {
    format!("{module}.weight")
}

/// `{module}.bias`.
pub fn bias(module: &str) -> String {
    format!("{module}.bias")
}

/// The learned temperature, stored as its logarithm.
pub const LOGIT_SCALE: &str = "logit_scale";

/// The image tower (timm `VisionTransformer`).
pub mod vision {
    /// Prefix of the trunk's tensors.
    pub const TRUNK: &str = "visual.trunk";
    /// The patch embedding convolution (`[width, 3, patch, patch]` weight and a bias).
    pub const PATCH_EMBED: &str = "visual.trunk.patch_embed.proj";
    /// The class token, `[1, 1, width]`.
    pub const CLS_TOKEN: &str = "visual.trunk.cls_token";
    /// The position embeddings, `[1, tokens, width]`.
    pub const POS_EMBED: &str = "visual.trunk.pos_embed";
    /// The final LayerNorm.
    pub const NORM: &str = "visual.trunk.norm";
    /// open_clip's projection into the joint space.
    pub const HEAD: &str = "visual.head.proj";

    /// The modules of transformer block `i`.
    #[derive(Debug, Clone)]
    pub struct Block(String);

    /// Transformer block `i`.
    pub fn block(i: usize) -> Block {
        Block(format!("{TRUNK}.blocks.{i}"))
    }

    impl Block {
        /// LayerNorm before attention.
        pub fn norm1(&self) -> String {
            format!("{}.norm1", self.0)
        }
        /// Fused query/key/value projection.
        pub fn qkv(&self) -> String {
            format!("{}.attn.qkv", self.0)
        }
        /// Attention output projection.
        pub fn proj(&self) -> String {
            format!("{}.attn.proj", self.0)
        }
        /// LayerNorm before the MLP.
        pub fn norm2(&self) -> String {
            format!("{}.norm2", self.0)
        }
        /// MLP expansion.
        pub fn fc1(&self) -> String {
            format!("{}.mlp.fc1", self.0)
        }
        /// MLP contraction.
        pub fn fc2(&self) -> String {
            format!("{}.mlp.fc2", self.0)
        }
    }
}

/// The text tower (Hugging Face `BertModel`).
pub mod text {
    /// Prefix of the transformer's tensors.
    pub const TRANSFORMER: &str = "text.transformer";
    /// Token embeddings, `[vocab, hidden]`.
    pub const WORD_EMBEDDINGS: &str = "text.transformer.embeddings.word_embeddings";
    /// Position embeddings, `[max_positions, hidden]`.
    pub const POSITION_EMBEDDINGS: &str = "text.transformer.embeddings.position_embeddings";
    /// Token type embeddings, `[types, hidden]` (type 0 is used).
    pub const TOKEN_TYPE_EMBEDDINGS: &str = "text.transformer.embeddings.token_type_embeddings";
    /// LayerNorm after the embeddings.
    pub const EMBEDDINGS_NORM: &str = "text.transformer.embeddings.LayerNorm";
    /// open_clip's projection when it is one `Linear`.
    pub const PROJ: &str = "text.proj";
    /// open_clip's projection when it is an MLP: its two `Linear` layers (a GELU between).
    pub const PROJ_MLP: [&str; 2] = ["text.proj.0", "text.proj.2"];

    /// The modules of encoder layer `i`.
    #[derive(Debug, Clone)]
    pub struct Layer(String);

    /// Encoder layer `i`.
    pub fn layer(i: usize) -> Layer {
        Layer(format!("{TRANSFORMER}.encoder.layer.{i}"))
    }

    impl Layer {
        /// Self-attention query, key or value projection (`name` is one of the three).
        pub fn attention(&self, name: &str) -> String {
            format!("{}.attention.self.{name}", self.0)
        }
        /// Attention output projection.
        pub fn attention_output(&self) -> String {
            format!("{}.attention.output.dense", self.0)
        }
        /// LayerNorm after attention.
        pub fn attention_norm(&self) -> String {
            format!("{}.attention.output.LayerNorm", self.0)
        }
        /// MLP expansion.
        pub fn intermediate(&self) -> String {
            format!("{}.intermediate.dense", self.0)
        }
        /// MLP contraction.
        pub fn output(&self) -> String {
            format!("{}.output.dense", self.0)
        }
        /// LayerNorm after the MLP.
        pub fn output_norm(&self) -> String {
            format!("{}.output.LayerNorm", self.0)
        }
    }
}
