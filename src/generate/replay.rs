//! Qwen2-VL / Qwen2.5-VL and LLaVA-NeXT / OneVision sessions re-run for knockouts and the
//! logit lens ([`Replayer`]): the positions of an answer token rebuilt as the pipeline built
//! them in the run.
//!
//! - Qwen VL: the session's picture (the resized, normalised image it stores) is cut into
//!   patches again, giving the run's `grid_thw`; the features fill the `<|image_pad|>`
//!   positions and the decoder takes the M-RoPE positions of the prompt (text after it
//!   continues from the prompt's largest position).
//! - LLaVA-NeXT / OneVision: the session's original image is read back and checked
//!   ([`anyres::session_image`]), then goes through the whole anyres processor (base view and
//!   tiles), the tower and the packing with newline rows, as in the run.

use candle_core::Tensor;

use super::anyres::{self, AnyresLoaded};
use super::qwen::{self, QwenLoaded};
use crate::explain::knockout::{sequence_ids, KnockoutError, Replay, Replayer};
use crate::explain::relevancy::{RelevancyError, RelevancyMaps};
use crate::model::decoder::Decoder;
use crate::model::NoTape;
use crate::session::{RegionKind, Session};

fn session_error(e: impl std::fmt::Display) -> KnockoutError {
    KnockoutError::Session(e.to_string())
}

fn image_error(e: impl std::fmt::Display) -> KnockoutError {
    KnockoutError::Image(e.to_string())
}

fn relevancy_error(e: impl std::fmt::Display) -> KnockoutError {
    KnockoutError::Relevancy(RelevancyError::Model(e.to_string()))
}

impl Replayer for QwenLoaded {
    fn decoder(&self) -> &Decoder {
        self.model.decoder()
    }

    fn replay(&self, s: &Session, t: usize) -> Result<Replay, KnockoutError> {
        let (ids, n_input) = sequence_ids(s, t)?;
        let px = &s.pixel_values;
        let [3, h, w] = px.shape[..] else {
            return Err(session_error(format!(
                "the session's picture has shape {:?}, not [3, h, w]",
                px.shape
            )));
        };
        let (patches, grid) = self
            .images
            .patches_of_picture(&px.data, h, w)
            .map_err(session_error)?;
        let m = self.images.merge_size;
        let merged = [grid[1] / m, grid[2] / m];
        if merged != s.manifest.model.image_grid {
            return Err(session_error(format!(
                "the session's picture gives a {}x{} grid but its manifest says {:?}",
                merged[0], merged[1], s.manifest.model.image_grid
            )));
        }
        let model = &self.model;
        let pixel_values = Tensor::from_vec(
            patches,
            (grid[1] * grid[2], self.images.patch_len()),
            model.device(),
        )?;
        let features = model
            .image_features(&pixel_values, grid, &mut NoTape)?
            .features;
        let embeds = model.embed_sequence(&ids, n_input, Some(&features))?;
        let positions = model.positions(&ids[..n_input], &[merged])?;
        let (cos, sin) = model.rope_tables(&positions, 0, ids.len())?;
        Ok(Replay {
            embeds,
            rope: Some((cos, sin)),
        })
    }

    fn relevancy(&self, s: &Session, todo: &[usize]) -> Result<RelevancyMaps, KnockoutError> {
        qwen::relevancy_maps(self, s, todo, &mut |_| {}).map_err(relevancy_error)
    }
}

impl Replayer for AnyresLoaded {
    fn decoder(&self) -> &Decoder {
        self.model.llava().decoder()
    }

    fn replay(&self, s: &Session, t: usize) -> Result<Replay, KnockoutError> {
        let (ids, n_input) = sequence_ids(s, t)?;
        let image = anyres::session_image(self, s).map_err(image_error)?;
        let pixels = self.images.preprocess(&image).map_err(session_error)?;
        let llava = self.model.llava();
        let pv = Tensor::from_vec(pixels.data, pixels.shape.to_vec(), llava.device())?;
        let features = self
            .model
            .image_features(&pv, &pixels.layout, &mut NoTape)?;
        Ok(Replay {
            embeds: llava.embed_sequence(&ids, n_input, Some(&features))?,
            rope: None,
        })
    }

    fn relevancy(&self, s: &Session, todo: &[usize]) -> Result<RelevancyMaps, KnockoutError> {
        let image = anyres::session_image(self, s).map_err(image_error)?;
        let kinds: Vec<RegionKind> = s.regions().iter().map(|r| r.kind).collect();
        anyres::relevancy_maps(self, &image, s, &kinds, todo, &mut |_| {}).map_err(relevancy_error)
    }
}
