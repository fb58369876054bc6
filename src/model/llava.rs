//! LLaVA: vision tower → projector → decoder, with the image features merged into the token
//! embeddings at the image-token positions.

use candle_core::{DType, Device, Tensor};

use super::cache::KvCache;
use super::config::{LlavaConfig, SelectStrategy};
use super::decoder::Decoder;
use super::error::check_dtype;
use super::families;
use super::files::ModelDir;
use super::projector::Projector;
use super::randomize::Randomize;
use super::tape::{NoTape, Tape};
use super::vision::VisionTower;
use super::weights::{KeyLayout, Weights};
use super::ModelError;
use crate::trace::Stage;

/// An instrumented LLaVA model.
#[derive(Debug, Clone)]
pub struct Llava {
    cfg: LlavaConfig,
    vision: VisionTower,
    projector: Projector,
    decoder: Decoder,
    feature_layers: Vec<usize>,
    layout: KeyLayout,
    device: Device,
    dtype: DType,
}

impl Llava {
    /// Load the model of `dir` in `dtype` on `device`. The weight files are checked first; a
    /// missing or misshapen tensor is reported by name.
    pub fn load(dir: &ModelDir, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        Self::load_with(dir, dtype, device, None)
    }

    /// [`Llava::load`] with the decoder layers `randomize` names randomised (seeded noise of
    /// each trained tensor's scale, norms kept; [`super::randomize`]): the model of a
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
        let cfg = LlavaConfig::from_file(&dir.config)?;
        let mut weights = Weights::open(&dir.weights, dtype, device)?;
        if let Some(r) = randomize {
            weights.vb = r.apply(weights.vb.clone(), weights.layout.text());
        }
        Self::build(cfg, &weights, dtype, device)
    }

    pub(crate) fn build(
        cfg: LlavaConfig,
        w: &Weights,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let layout = w.layout;
        let feature_layers = cfg.feature_layers()?;
        let needed = feature_layers.iter().copied().max().unwrap_or(0);
        let vision = VisionTower::load(
            w.vb.pp(w.vision_prefix),
            &cfg.vision_config,
            families::vision_spec(&cfg.vision_config),
            needed,
        )
        .map_err(|e| w.explain(e))?;
        // The projector's depth is read from the weights: linear_1, linear_2, ...
        let proj_prefix = layout.projector();
        let depth = (1..)
            .take_while(|i| w.contains(&format!("{proj_prefix}.linear_{i}.weight")))
            .count();
        if depth == 0 {
            return Err(ModelError::MissingTensor {
                name: format!("{proj_prefix}.linear_1.weight"),
                files: "the projector".to_string(),
            });
        }
        let in_dim = cfg.vision_config.hidden_size * feature_layers.len();
        let projector = Projector::load(
            w.vb.pp(proj_prefix),
            depth,
            in_dim,
            cfg.text_config.hidden_size,
            cfg.multimodal_projector_bias,
            cfg.projector_hidden_act,
        )
        .map_err(|e| w.explain(e))?;
        let tied = cfg.tie_word_embeddings || !w.contains(&format!("{}.weight", layout.lm_head()));
        let lm_head = (!tied).then(|| w.vb.pp(layout.lm_head()));
        let decoder = Decoder::load(
            w.vb.pp(layout.text()),
            lm_head,
            &cfg.text_config,
            families::decoder_spec(&cfg.text_config),
        )
        .map_err(|e| w.explain(e))?;
        Ok(Self {
            cfg,
            vision,
            projector,
            decoder,
            feature_layers,
            layout,
            device: device.clone(),
            dtype,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlavaConfig {
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

    /// The key layout the weights used.
    pub fn layout(&self) -> KeyLayout {
        self.layout
    }

    /// Number of projector layers (1 = linear, 2 = mlp2x_gelu, ...).
    pub fn projector_depth(&self) -> usize {
        self.projector.depth()
    }

    /// Number of vision layers that run (up to the feature layer); `attn.vit` has this many.
    pub fn vision_layers_run(&self) -> usize {
        self.vision.num_layers()
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.cfg.text_config.num_hidden_layers
    }

    /// Number of decoder query heads.
    pub fn num_heads(&self) -> usize {
        self.cfg.text_config.num_attention_heads
    }

    /// A fresh KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.num_layers())
    }

    /// Number of image features F: P, or P + 1 with strategy `full`.
    pub fn num_image_features(&self) -> usize {
        self.cfg.num_image_features()
    }

    /// Patch grid `[rows, cols]`.
    pub fn image_grid(&self) -> [usize; 2] {
        let side = self.cfg.vision_config.grid_side();
        [side, side]
    }

    /// The decoder's input embedding matrix `[vocab, hidden]`.
    pub fn embeddings(&self) -> &Tensor {
        self.decoder.embeddings()
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The vision tower.
    pub fn vision(&self) -> &VisionTower {
        &self.vision
    }

    /// The projector.
    pub fn projector(&self) -> &Projector {
        &self.projector
    }

    /// The vision hidden-state indices that feed the projector.
    pub fn feature_layers(&self) -> &[usize] {
        &self.feature_layers
    }

    /// Image features `[F, hidden]` of `pixel_values` (`[1, 3, h, w]` or `[3, h, w]`, f32, on
    /// any device): the selected vision hidden states, CLS dropped unless the strategy is
    /// `full`, passed through the projector.
    pub fn image_features(
        &self,
        pixel_values: &Tensor,
        tape: &mut dyn Tape,
    ) -> candle_core::Result<Tensor> {
        let pixel_values = match pixel_values.rank() {
            3 => pixel_values.unsqueeze(0)?,
            4 => pixel_values.clone(),
            _ => candle_core::bail!(
                "pixel values must be [1, 3, h, w] or [3, h, w], got {:?}",
                pixel_values.dims()
            ),
        };
        if pixel_values.dim(0)? != 1 {
            candle_core::bail!(
                "one image at a time, got a batch of {}",
                pixel_values.dim(0)?
            );
        }
        let pixel_values = pixel_values.to_device(&self.device)?;
        self.features(&pixel_values, tape)?.squeeze(0)
    }

    /// Image features `[B, F, hidden]` of a batch of images `pixel_values` `[B, 3, h, w]` (f32,
    /// any device), as [`Llava::image_features`] computes them one by one; nothing is recorded.
    pub fn batch_image_features(&self, pixel_values: &Tensor) -> candle_core::Result<Tensor> {
        if pixel_values.rank() != 4 {
            candle_core::bail!(
                "a batch of pixel values must be [B, 3, h, w], got {:?}",
                pixel_values.dims()
            );
        }
        let pixel_values = pixel_values.to_device(&self.device)?;
        self.features(&pixel_values, &mut NoTape)
    }

    /// `[B, F, hidden]` features of `[B, 3, h, w]` pixel values already on the model's device.
    pub(crate) fn features(
        &self,
        pixel_values: &Tensor,
        tape: &mut dyn Tape,
    ) -> candle_core::Result<Tensor> {
        let stage = Stage::new(tracing::info_span!("vision_tower"), &self.device);
        let states = self
            .vision
            .forward(pixel_values, &self.feature_layers, tape)?;
        drop(stage);
        let states = if states.len() == 1 {
            states[0].clone()
        } else {
            Tensor::cat(&states, 2)?
        };
        let selected = match self.cfg.vision_feature_select_strategy {
            SelectStrategy::Default => states.narrow(1, 1, states.dim(1)? - 1)?,
            SelectStrategy::Full => states,
        };
        let _stage = Stage::new(tracing::info_span!("projector"), &self.device);
        self.projector.forward(&selected, tape)
    }

    /// The vision token that image feature `j` comes from.
    pub fn token_of_feature(&self, j: usize) -> usize {
        match self.cfg.vision_feature_select_strategy {
            SelectStrategy::Default => j + 1,
            SelectStrategy::Full => j,
        }
    }

    /// Token embeddings `[1, n, hidden]` of `input_ids`, the positions whose id is
    /// `image_token_index` replaced, in order, by the rows of `image_features` `[F, hidden]`.
    /// Token rows are scaled as the decoder's family wants (see [`Decoder::scale_embeds`]),
    /// image features are not (transformers 5 scales inside Gemma's embedding module).
    pub fn embed(
        &self,
        input_ids: &[u32],
        image_features: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let image_pos = self.image_positions(input_ids);
        self.embed_at(input_ids, &image_pos, image_features)
    }

    /// Embeddings `[1, n, hidden]` of a prompt `ids[..n_input]` followed by generated tokens:
    /// image tokens are those of the prompt; a generated image-token id is an ordinary token.
    pub fn embed_sequence(
        &self,
        ids: &[u32],
        n_input: usize,
        image_features: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let image_pos = self.image_positions(&ids[..n_input.min(ids.len())]);
        self.embed_at(ids, &image_pos, image_features)
    }

    /// Embeddings `[1, n, hidden]` of ids that are all ordinary tokens, the image-token id
    /// included (as transformers embeds a generated image-token id while decoding).
    pub fn embed_text(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        self.embed_at(ids, &[], None)
    }

    /// Positions of `ids` that hold the image-token id.
    pub fn image_positions(&self, ids: &[u32]) -> Vec<usize> {
        let image_id = self.cfg.image_token_index;
        ids.iter()
            .enumerate()
            .filter(|(_, &id)| id == image_id)
            .map(|(i, _)| i)
            .collect()
    }

    /// Embeddings of `ids` with `image_pos` (increasing) replaced by the image features.
    fn embed_at(
        &self,
        input_ids: &[u32],
        image_pos: &[usize],
        image_features: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        // Image positions are replaced below, so look them up as id 0 (the image id may lie
        // outside the vocabulary).
        let mut ids = input_ids.to_vec();
        for &p in image_pos {
            ids[p] = 0;
        }
        let text = self
            .decoder
            .scale_embeds(&self.decoder.embed_tokens(&ids)?)?;
        let features = match (image_features, image_pos.is_empty()) {
            (_, true) => return Ok(text),
            (None, false) => candle_core::bail!(
                "input_ids hold {} image tokens but no image features were given",
                image_pos.len()
            ),
            (Some(f), false) => f,
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

    /// Run the decoder over `embeds` `[1, n, hidden]` at positions `offset..offset + n`
    /// (`offset` = positions already in `cache`); returns f32 logits `[1, n, vocab]` when
    /// `all_logits`, else `[1, 1, vocab]` for the last position.
    pub fn forward(
        &self,
        embeds: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        tape: &mut dyn Tape,
        all_logits: bool,
    ) -> candle_core::Result<Tensor> {
        self.decoder
            .forward(embeds, offset, cache, tape, all_logits)
    }
}
