//! Session assembly, written once for every model family: what a run knows at its end (the
//! model's shape, the request, the encoded prompt, the image regions, the output ids, the
//! recorded attention and the timings) becomes a [`Session`] of the current schema.

use std::collections::BTreeMap;

use super::RunRequest;
use crate::model::AttentionRecorder;
use crate::processing::{EncodedPrompt, PromptProcessor};
use crate::session::{
    Array, GenerationInfo, ImageInfo, ImageRegion, Manifest, ModelFamily, ModelInfo, Session,
    TokenStrings, VisionAttention, SCHEMA,
};

/// The model's identity and sizes, as the session records them.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    /// Architecture name from config.json.
    pub architecture: String,
    /// Decoder layers.
    pub text_layers: usize,
    /// Decoder attention heads.
    pub text_heads: usize,
    /// Vision-tower layers.
    pub vision_layers: usize,
    /// Vision-tower attention heads.
    pub vision_heads: usize,
    /// Decoder and vision families.
    pub family: ModelFamily,
}

/// Everything a finished run hands over to become a session.
pub struct SessionBuilder<'a> {
    /// What the user named the model (folder or id).
    pub model_name: &'a str,
    /// The model's identity and sizes.
    pub shape: ModelShape,
    /// The request the run answered.
    pub request: &'a RunRequest,
    /// How the image was fitted (`default`, `crop`, `resize`, `pad`, `native`, ...).
    pub image_mode: String,
    /// `[width, height]` of the original image.
    pub original_size: [u32; 2],
    /// The prompt with the image placeholder expanded.
    pub encoded: EncodedPrompt,
    /// The image regions in input order (inside `encoded.image_span`).
    pub regions: Vec<ImageRegion>,
    /// The picture the session shows, `[3, h, w]` normalised planes.
    pub pixel_values: Array,
    /// Generated ids.
    pub output: Vec<u32>,
    /// Stage timings.
    pub timings: BTreeMap<String, f64>,
}

impl SessionBuilder<'_> {
    /// The session: token strings decoded with `prompts`, attention taken from `recorder`
    /// (vision-tower attention only when `vision_attention`, i.e. when it is over the grid's
    /// patches), `model.image_grid` the first region's grid.
    pub fn build(
        self,
        prompts: &PromptProcessor,
        recorder: &AttentionRecorder,
        vision_attention: bool,
    ) -> Session {
        let shape = self.shape;
        let (layers, heads) = (shape.text_layers, shape.text_heads);
        let positions = (self.encoded.ids.len() + self.output.len()).saturating_sub(1);
        let to_array = |(shape, data): (Vec<usize>, Vec<f32>)| Array::new(shape, data);
        let attn_gen = recorder
            .generated_rows(layers, heads, positions)
            .and_then(to_array);
        let mut attn_full = BTreeMap::new();
        for &layer in &recorder.mode().full_layers {
            if let Some(a) = recorder.full(layer, positions).and_then(to_array) {
                attn_full.insert(layer, a);
            }
        }
        let attn_vit = if vision_attention {
            recorder
                .vision()
                .and_then(to_array)
                .map(VisionAttention::Full)
        } else {
            None
        };
        let image_grid = self.regions.first().map(|r| r.grid).unwrap_or([0, 0]);
        let request = self.request;
        let manifest = Manifest {
            schema: SCHEMA.into(),
            model: ModelInfo {
                path: self.model_name.to_string(),
                architecture: shape.architecture,
                text_layers: layers,
                text_heads: heads,
                vision_layers: shape.vision_layers,
                vision_heads: shape.vision_heads,
                image_grid,
                family: Some(shape.family),
            },
            prompt: request.prompt.clone(),
            image: ImageInfo {
                path: request.image.display().to_string(),
                mode: self.image_mode,
                original_size: self.original_size,
            },
            generation: GenerationInfo {
                max_new_tokens: request.max_new_tokens,
                temperature: request.temperature,
                top_p: request.top_p,
                seed: request.seed,
                dtype: Some(request.dtype.as_str().to_string()),
                device: Some(request.device.to_string()),
            },
            tokens: TokenStrings {
                input: self.encoded.tokens,
                output: self
                    .output
                    .iter()
                    .map(|&id| prompts.decode_token(id))
                    .collect(),
            },
            image_span: self.encoded.image_span,
            regions: self.regions,
            relevancy_tokens: Vec::new(),
            causal: None,
            timings: self.timings,
            lens: Vec::new(),
            turns: Vec::new(),
            vision_attention: None,
        };
        Session {
            manifest,
            input_ids: self.encoded.ids.iter().map(|&i| i as i64).collect(),
            output_ids: self.output.iter().map(|&i| i as i64).collect(),
            pixel_values: self.pixel_values,
            attn_gen,
            attn_full,
            attn_vit,
            relevancy_llm: None,
            relevancy_vit: None,
            relevancy_combined: None,
            turns: Vec::new(),
        }
    }
}
