//! lvlmscope: run a large vision-language model locally and explain each token of its answer.
//!
//! Data flows one way (see DESIGN.md):
//! `processing` → `model` → `generate` → `session` → `explain` → `tui` / `report`.

pub mod demo;
pub mod explain;
pub mod generate;
pub mod job;
pub mod model;
pub mod processing;
pub mod report;
pub mod session;
pub mod style;
pub mod tui;
