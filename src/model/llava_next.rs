//! LLaVA-NeXT and LLaVA-OneVision: the LLaVA model ([`Llava`]: tower, projector, decoder) run
//! on the base view and every tile as one batch, the per-tile projector outputs packed into
//! the image features as transformers' `pack_image_features` does: base view first, then the
//! stitched grid, unpadded (and for OneVision pooled), with `image_newline` after each row.
//! The packing is the [`AnyresLayout`]'s list of feature sources, so the processor's token
//! count and the model's features agree by construction (tests/fixtures/README.md, "LLaVA-NeXT
//! and LLaVA-OneVision").

use candle_core::{DType, Device, Tensor};

use super::config::AnyresConfig;
use super::error::check_dtype;
use super::files::ModelDir;
use super::llava::Llava;
use super::randomize::Randomize;
use super::tape::Tape;
use super::weights::{KeyLayout, Weights};
use super::ModelError;
use crate::processing::anyres::{AnyresLayout, FeatureSource, TokenRule};

/// An instrumented LLaVA-NeXT / OneVision model.
#[derive(Debug, Clone)]
pub struct LlavaNext {
    cfg: AnyresConfig,
    llava: Llava,
    newline: Tensor,
}

impl LlavaNext {
    /// Load the model of `dir` in `dtype` on `device`; a missing or misshapen tensor
    /// (`image_newline` included) is reported by name.
    pub fn load(dir: &ModelDir, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        Self::load_with(dir, dtype, device, None)
    }

    /// [`LlavaNext::load`] with the decoder layers `randomize` names randomised (seeded noise
    /// of each trained tensor's scale, norms kept; [`super::randomize`]): the model of a
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
        let cfg = AnyresConfig::from_file(&dir.config)?;
        let mut weights = Weights::open(&dir.weights, dtype, device)?;
        if let Some(r) = randomize {
            weights.vb = r.apply(weights.vb.clone(), weights.layout.text());
        }
        let llava = Llava::build(cfg.llava.clone(), &weights, dtype, device)?;
        let key = match weights.layout {
            KeyLayout::Legacy => "image_newline",
            KeyLayout::Current => "model.image_newline",
        };
        let newline = weights
            .vb
            .get(cfg.llava.text_config.hidden_size, key)
            .map_err(|e| weights.explain(e))?;
        Ok(Self {
            cfg,
            llava,
            newline,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AnyresConfig {
        &self.cfg
    }

    /// The LLaVA model underneath (embedding, decoder, tower, projector).
    pub fn llava(&self) -> &Llava {
        &self.llava
    }

    /// The `image_newline` vector `[hidden]`.
    pub fn newline(&self) -> &Tensor {
        &self.newline
    }

    /// The token rule the model's own config implies (the processor's files may restate it).
    pub fn token_rule(&self) -> TokenRule {
        let side = self.cfg.llava.vision_config.grid_side();
        TokenRule {
            side,
            base: self.llava.num_image_features(),
            max_tiles: self.cfg.max_tiles,
        }
    }

    /// Per-view projector outputs `[views, Pf, hidden]` of `pixel_values` `[views, 3, t, t]`
    /// (f32, any device): the tower and projector of LLaVA, once over the batch of views.
    pub fn view_features(
        &self,
        pixel_values: &Tensor,
        tape: &mut dyn Tape,
    ) -> candle_core::Result<Tensor> {
        if pixel_values.rank() != 4 {
            candle_core::bail!(
                "anyres pixel values must be [views, 3, h, w], got {:?}",
                pixel_values.dims()
            );
        }
        let pixel_values = pixel_values.to_device(self.llava.device())?;
        self.llava.features(&pixel_values, tape)
    }

    /// Image features `[F, hidden]` of `pixel_values` `[views, 3, t, t]` laid out by `layout`.
    pub fn image_features(
        &self,
        pixel_values: &Tensor,
        layout: &AnyresLayout,
        tape: &mut dyn Tape,
    ) -> candle_core::Result<Tensor> {
        let views = self.view_features(pixel_values, tape)?;
        self.pack(&views, layout)
    }

    /// Pack per-view projector outputs `[views, Pf, hidden]` into the image features.
    pub fn pack(&self, views: &Tensor, layout: &AnyresLayout) -> candle_core::Result<Tensor> {
        let (v, pf, hidden) = views.dims3()?;
        let side = layout.rule.side;
        if v != layout.views() || pf != side * side || pf != layout.rule.base {
            candle_core::bail!(
                "the tower gave {v} views of {pf} features but the image layout needs {} views of {}",
                layout.views(),
                side * side
            );
        }
        let newline_row = (v * pf) as u32;
        let table = Tensor::cat(
            &[
                &views.reshape((v * pf, hidden))?,
                &self.newline.to_dtype(views.dtype())?.unsqueeze(0)?,
            ],
            0,
        )?;
        let sources = layout.sources();
        let taps = sources
            .iter()
            .map(|s| match s {
                FeatureSource::Cells(c) => c.len(),
                FeatureSource::Newline => 1,
            })
            .max()
            .unwrap_or(1);
        let f = sources.len();
        let mut index = vec![vec![newline_row; f]; taps];
        let mut weight = vec![vec![0f32; f]; taps];
        for (row, s) in sources.iter().enumerate() {
            match s {
                FeatureSource::Newline => weight[0][row] = 1.0,
                FeatureSource::Cells(cells) => {
                    for (k, &(src, w)) in cells.iter().enumerate() {
                        index[k][row] = src as u32;
                        weight[k][row] = w;
                    }
                }
            }
        }
        let device = table.device();
        let gather = |k: usize| -> candle_core::Result<Tensor> {
            table.index_select(&Tensor::new(index[k].as_slice(), device)?, 0)
        };
        if taps == 1 {
            // Every feature is one projector row (or the newline) with weight 1: a plain copy.
            return gather(0);
        }
        let mut out: Option<Tensor> = None;
        for (k, wk) in weight.into_iter().enumerate() {
            let w = Tensor::from_vec(wk, (f, 1), device)?.to_dtype(table.dtype())?;
            let term = gather(k)?.broadcast_mul(&w)?;
            out = Some(match out {
                None => term,
                Some(acc) => (acc + term)?,
            });
        }
        out.ok_or_else(|| candle_core::Error::Msg("no image features".into()))
    }
}
