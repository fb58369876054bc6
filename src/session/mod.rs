//! The record of one run and its safetensors file (schema `lvlmscope.session/2`; files of
//! schema 1 still open).
//!
//! A [`Session`] holds plain `Vec`s, not device tensors, so that views and explanation code can
//! read it without the model, and a session file can be opened on a machine without a GPU.

mod array;
mod file;
pub mod manifest;
mod pieces;
mod regions;
pub mod synthetic;
mod turns;
mod vision;

pub use array::Array;
pub use file::{load, save, AttentionDtype, SessionError};
pub use manifest::{
    CausalHead, CausalParams, CausalResults, CausalToken, GenerationInfo, ImageInfo, Manifest,
    ModelFamily, ModelInfo, TokenStrings, SCHEMA, SCHEMA_1,
};
pub use pieces::piece_text;
pub use regions::{check_regions, schema1_region, square_input_rect, ImageRegion, RegionKind};
pub use turns::{Turn, TurnInfo};
pub use vision::{Placement, VisionAttention, VisionInfo, VisionRow, VisionViews};

use std::borrow::Cow;

use std::collections::BTreeMap;

/// One run of the model: its inputs, outputs, recorded attention and explanations.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Everything that is not a tensor.
    pub manifest: Manifest,
    /// Prompt ids, image token expanded to one id per image feature. Length N.
    pub input_ids: Vec<i64>,
    /// Generated ids (with EOS if generated). Length T.
    pub output_ids: Vec<i64>,
    /// The normalised image the vision tower saw, `[3, h, w]`.
    pub pixel_values: Array,
    /// `[T, L, H, S]`: row t is the attention of position N−1+t over keys 0..S−1.
    pub attn_gen: Option<Array>,
    /// Decoder layer → its full attention `[H, S, S]`.
    pub attn_full: BTreeMap<usize, Array>,
    /// Vision-tower attention, when recorded: one view's matrices `[Lv, Hv, P+1, P+1]`
    /// (`attn.vit`), or an anyres run's rows per view and their placement (`attn.vit.v{K}`).
    pub attn_vit: Option<VisionAttention>,
    /// `[T, S]`: decoder relevancy rows (rows of tokens not in `relevancy_tokens` are zero).
    pub relevancy_llm: Option<Array>,
    /// `[T, P]`: vision-tower relevancy per patch.
    pub relevancy_vit: Option<Array>,
    /// `[T, P]`: decoder relevancy over image tokens carried through the vision tower.
    pub relevancy_combined: Option<Array>,
    /// The earlier turns of a conversation (all but the last, which the fields above hold);
    /// empty for a single question.
    pub turns: Vec<Turn>,
}

impl Session {
    /// Number of input positions (N).
    pub fn num_input(&self) -> usize {
        self.input_ids.len()
    }

    /// Number of generated tokens (T).
    pub fn num_output(&self) -> usize {
        self.output_ids.len()
    }

    /// Number of positions that have an attention row: S = N + T − 1.
    pub fn num_positions(&self) -> usize {
        (self.num_input() + self.num_output()).saturating_sub(1)
    }

    /// Absolute position of the query that produced output token `t` (N − 1 + t).
    pub fn query_position(&self, t: usize) -> usize {
        self.num_input() - 1 + t
    }

    /// Input positions of the image features, as a range.
    pub fn image_range(&self) -> std::ops::Range<usize> {
        let [start, len] = self.manifest.image_span;
        start..start + len
    }

    /// The image regions in input order: the manifest's, or for a manifest without any (as in
    /// schema 1 files) the one region its image span and grid describe. Empty when the run has
    /// no image or such a grid does not fit the span (a loaded file is refused for that).
    pub fn regions(&self) -> Cow<'_, [ImageRegion]> {
        let m = &self.manifest;
        if !m.regions.is_empty() {
            return Cow::Borrowed(&m.regions);
        }
        if m.image_span[1] == 0 {
            return Cow::Owned(Vec::new());
        }
        let one = schema1_region(
            m.image_span,
            m.model.image_grid,
            &m.image.mode,
            m.image.original_size,
        );
        Cow::Owned(one.into_iter().collect())
    }

    /// The rectangle of the original image (`[x0, y0, x1, y1]`, pixels) that `pixel_values`
    /// shows: the first region's (LLaVA-1.5's crop or padded square, Qwen2-VL's whole image,
    /// an anyres run's base view, which is the whole fitted image); `None` without a region.
    pub fn picture_rect(&self) -> Option<[f64; 4]> {
        self.regions().first().map(|r| r.rect)
    }

    /// Absolute input positions of every region's cells, region by region, each row-major.
    pub fn cell_positions(&self) -> Vec<usize> {
        self.regions()
            .iter()
            .flat_map(ImageRegion::cell_positions)
            .collect()
    }

    /// The token string at absolute position `p` (input tokens, then output tokens).
    pub fn token_at(&self, p: usize) -> &str {
        let n = self.manifest.tokens.input.len();
        if p < n {
            &self.manifest.tokens.input[p]
        } else {
            self.manifest
                .tokens
                .output
                .get(p - n)
                .map(String::as_str)
                .unwrap_or("")
        }
    }
}
