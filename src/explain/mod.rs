//! Explanation methods: pure functions of a `Session` (plus the model, for gradients).
//! Nothing here knows about the terminal.

pub mod attention;
pub mod catalogue;
pub mod causal;
pub mod compare;
pub mod faithfulness;
pub mod knockout;
pub mod lens;
pub mod maps;
pub mod relevancy;
