//! Chefer relevancy maps (decoder, vision tower, combined).
