//! The image overlay and PNG export, which the report shares with the app: [`crate::style::overlay`]
//! re-exported under the path the report's callers know.

pub use crate::style::overlay::*;
