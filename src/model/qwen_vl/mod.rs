//! Qwen2-VL and Qwen2.5-VL: the Qwen vision tower ([`vision`]) feeding the shared decoder
//! (the `qwen2` family: q/k/v biases) with multimodal rotary positions ([`mrope`]). The image
//! features replace the `<|image_pad|>` positions, one per merged token.
//!
//! Generation, as for LLaVA (prefill, then one token per call), with positions from the
//! prompt:
//!
//! ```ignore
//! let out = model.image_features(&pixels, grid_thw, &mut rec)?;
//! let pos = model.positions(&input_ids, &[merged_grid])?;
//! let embeds = model.embed(&input_ids, Some(&out.features))?;
//! let logits = model.forward(&embeds, 0, &pos, &mut cache, &mut rec, false)?;
//! ```

pub mod mrope;
pub mod vision;
mod windows;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::cache::KvCache;
use super::config::QwenVlConfig;
use super::decoder::Decoder;
use super::error::check_dtype;
use super::families;
use super::files::ModelDir;
use super::randomize::Randomize;
use super::tape::Tape;
use super::ModelError;
use crate::trace::Stage;

pub use mrope::{Mrope, MropePositions};
pub use vision::{QwenVision, VisionOutput};

/// An instrumented Qwen2-VL / Qwen2.5-VL model.
#[derive(Debug, Clone)]
pub struct QwenVl {
    cfg: QwenVlConfig,
    vision: QwenVision,
    decoder: Decoder,
    mrope: Mrope,
    device: Device,
    dtype: DType,
}

/// Weight prefixes of the two layouts: (text body, vision tower).
fn prefixes(vb: &VarBuilder) -> (&'static str, &'static str) {
    if vb.contains_tensor("model.language_model.embed_tokens.weight") {
        ("model.language_model", "model.visual")
    } else {
        ("model", "visual")
    }
}

impl QwenVl {
    /// Load the model of `dir` in `dtype` on `device`.
    pub fn load(dir: &ModelDir, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        Self::load_with(dir, dtype, device, None)
    }

    /// [`QwenVl::load`] with the decoder layers `randomize` names randomised (seeded noise of
    /// each trained tensor's scale, norms kept; [`crate::model::randomize`]): the model of a
    /// model-randomisation sanity check.
    pub fn load_randomized(
        dir: &ModelDir,
        dtype: DType,
        device: &Device,
        randomize: &Randomize,
    ) -> Result<Self, ModelError> {
        Self::load_with(dir, dtype, device, Some(randomize))
    }

    fn load_with(
        dir: &ModelDir,
        dtype: DType,
        device: &Device,
        randomize: Option<&Randomize>,
    ) -> Result<Self, ModelError> {
        check_dtype(dtype, device)?;
        let cfg = QwenVlConfig::from_file(&dir.config)?;
        for file in &dir.weights {
            super::weights::check_file(file)?;
        }
        // SAFETY: the files are mapped read-only; like every mmap-based loader we rely on them
        // not being modified while the model is alive.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&dir.weights, dtype, device) }
            .map_err(|e| ModelError::BadWeights {
                file: dir.weights.first().cloned().unwrap_or_default(),
                detail: e.to_string(),
            })?;
        let vb = match randomize {
            Some(r) => {
                let text = prefixes(&vb).0;
                r.apply(vb, text)
            }
            None => vb,
        };
        Self::build(cfg, vb, dtype, device).map_err(ModelError::Candle)
    }

    fn build(
        cfg: QwenVlConfig,
        vb: VarBuilder,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let (text, visual) = prefixes(&vb);
        let vision = QwenVision::load(vb.pp(visual), &cfg.vision_config, cfg.variant)?;
        let tied = cfg.tie_word_embeddings || !vb.contains_tensor("lm_head.weight");
        let lm_head = (!tied).then(|| vb.pp("lm_head"));
        let decoder = Decoder::load(
            vb.pp(text),
            lm_head,
            &cfg.text_config,
            families::decoder_spec(&cfg.text_config),
        )?;
        let t = &cfg.text_config;
        let mrope = Mrope::new(t.head_dim, t.rope_theta, &cfg.mrope_section);
        Ok(Self {
            cfg,
            vision,
            decoder,
            mrope,
            device: device.clone(),
            dtype,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &QwenVlConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.cfg.text_config.num_hidden_layers
    }

    /// Number of decoder query heads.
    pub fn num_heads(&self) -> usize {
        self.cfg.text_config.num_attention_heads
    }

    /// Number of vision blocks (all run; `attn.vit` has this many).
    pub fn vision_layers_run(&self) -> usize {
        self.vision.num_layers()
    }

    /// A fresh KV cache.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.num_layers())
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The vision tower.
    pub fn vision(&self) -> &QwenVision {
        &self.vision
    }

    /// Vision tower over `pixel_values` `[P, patch_len]` (f32, any device) of one still image
    /// with `grid_thw`: merged features `[P / 4, hidden]` and the last block's output.
    pub fn image_features(
        &self,
        pixel_values: &Tensor,
        grid_thw: [usize; 3],
        tape: &mut dyn Tape,
    ) -> candle_core::Result<VisionOutput> {
        let pixel_values = pixel_values.to_device(&self.device)?;
        let _stage = Stage::new(tracing::info_span!("vision_tower"), &self.device);
        self.vision.forward(&pixel_values, grid_thw, tape)
    }

    /// M-RoPE positions of a prompt whose image runs have merged grids `grids`.
    pub fn positions(
        &self,
        input_ids: &[u32],
        grids: &[[usize; 2]],
    ) -> candle_core::Result<MropePositions> {
        MropePositions::new(input_ids, self.cfg.image_token_id, grids)
    }

    /// Embeddings `[1, n, hidden]` of a prompt `ids[..n_input]` and generated tokens after
    /// it: the prompt's `<|image_pad|>` positions take the rows of `features` in order; a
    /// generated image-pad id is an ordinary token.
    pub fn embed_sequence(
        &self,
        ids: &[u32],
        n_input: usize,
        features: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let image_id = self.cfg.image_token_id;
        let image_pos: Vec<usize> = (0..n_input.min(ids.len()))
            .filter(|&i| ids[i] == image_id)
            .collect();
        let mut lookup = ids.to_vec();
        for &p in &image_pos {
            lookup[p] = 0;
        }
        let text = self.decoder.embed_tokens(&lookup)?;
        if image_pos.is_empty() {
            return Ok(text);
        }
        let Some(features) = features else {
            candle_core::bail!(
                "input_ids hold {} image tokens but no image features were given",
                image_pos.len()
            );
        };
        let (f_len, hidden) = features.dims2()?;
        if f_len != image_pos.len() {
            candle_core::bail!(
                "input_ids hold {} image tokens but there are {f_len} image features",
                image_pos.len()
            );
        }
        let n = ids.len();
        let features = features.to_device(&self.device)?.to_dtype(self.dtype)?;
        let table = Tensor::cat(&[&text.squeeze(0)?, &features], 0)?;
        let mut index: Vec<u32> = (0..n as u32).collect();
        for (k, &p) in image_pos.iter().enumerate() {
            index[p] = (n + k) as u32;
        }
        let index = Tensor::new(index.as_slice(), &self.device)?;
        table.index_select(&index, 0)?.reshape((1, n, hidden))
    }

    /// Embeddings of a prompt with its image features.
    pub fn embed(&self, ids: &[u32], features: Option<&Tensor>) -> candle_core::Result<Tensor> {
        self.embed_sequence(ids, ids.len(), features)
    }

    /// Embeddings of ordinary tokens (decoding).
    pub fn embed_text(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        self.decoder.embed_tokens(ids)
    }

    /// Decoder RoPE tables `cos`, `sin` `[n, d/2]` of sequence indices `offset..offset + n`.
    pub fn rope_tables(
        &self,
        pos: &MropePositions,
        offset: usize,
        n: usize,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        self.mrope
            .cos_sin(&pos.range(offset, n), self.dtype, &self.device)
    }

    /// Run the decoder over `embeds` `[1, n, hidden]` at sequence indices `offset..offset + n`
    /// with the M-RoPE positions `pos`; f32 logits `[1, n, vocab]` (`all_logits`) or
    /// `[1, 1, vocab]`.
    pub fn forward(
        &self,
        embeds: &Tensor,
        offset: usize,
        pos: &MropePositions,
        cache: &mut KvCache,
        tape: &mut dyn Tape,
        all_logits: bool,
    ) -> candle_core::Result<Tensor> {
        let n = embeds.dim(1)?;
        let (cos, sin) = self.rope_tables(pos, offset, n)?;
        let mut xs =
            self.decoder
                .hidden_states_with_rope(embeds, offset, (&cos, &sin), cache, tape)?;
        if !all_logits {
            xs = xs.narrow(1, n - 1, 1)?;
        }
        self.decoder.logits(&xs)
    }
}
