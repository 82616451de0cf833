//! The CPU engine's layers and towers, in the order data meets them: linear layers and
//! norms, attention over packed sequences (and its first-token form for the text tower's
//! last layer), then the two towers, [`vit::Vit`] and [`bert::Bert`].

pub(crate) mod attention;
pub(crate) mod bert;
pub(crate) mod first_token;
pub(crate) mod linear;
pub(crate) mod norm;
pub(crate) mod vit;
