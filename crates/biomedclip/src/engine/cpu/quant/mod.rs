//! Reduced-precision linear layers for the image tower (`--precision int8|bf16`): weights
//! converted once at load, activations per row on the fly, products summed exactly (int8,
//! in `i32`) or in `f32` (bf16). One file per instruction set under each.

pub(crate) mod bf16;
pub(crate) mod int8;
