//! lvlmscope: run a large vision-language model locally and explain each token of its answer.
//!
//! Data flows one way (see DESIGN.md):
//! `processing` → `model` → `generate` → `session` → `explain` → `tui` / `report`; `eval`
//! measures the explanations on synthetic scenes with known object masks.

pub mod batch;
pub mod demo;
pub mod eval;
pub mod explain;
pub mod generate;
pub mod job;
pub mod model;
pub mod processing;
pub mod report;
pub mod session;
pub mod style;
pub mod trace;
pub mod tui;
