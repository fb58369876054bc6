//! Where the report's callers found the causal helpers before they moved to
//! [`crate::explain::causal`] (the method's own module): the same items, re-exported.

pub use crate::explain::causal::{causal_for_token, default_params, CausalUnavailable};
