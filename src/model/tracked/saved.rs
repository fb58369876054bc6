//! The tape of the tracked pass: keeps, per layer, what the hand-written backward needs, from
//! the model's own forward (one sequence, the batch dimension dropped).

use candle_core::{Result, Tensor};

use crate::model::tape::{AttnSaved, MlpSaved, NormSaved, NormSlot, Site, Tape, Tower};

/// What one layer keeps (filled as the forward runs).
#[derive(Debug, Default)]
struct Partial {
    norm1: Option<NormSaved>,
    attn: Option<AttnSaved>,
    norm2: Option<NormSaved>,
    mlp: Option<MlpSaved>,
}

/// What one layer kept, complete.
#[derive(Debug)]
pub(super) struct LayerSaved {
    /// Norm before the attention.
    pub norm1: NormSaved,
    /// The attention's q/k/v and probabilities, `[heads, n, ·]`.
    pub attn: AttnSaved,
    /// Norm before the MLP.
    pub norm2: NormSaved,
    /// The MLP's activations.
    pub mlp: MlpSaved,
}

impl Partial {
    fn complete(self, what: &str) -> Result<LayerSaved> {
        match (self.norm1, self.attn, self.norm2, self.mlp) {
            (Some(norm1), Some(attn), Some(norm2), Some(mlp)) => Ok(LayerSaved {
                norm1,
                attn,
                norm2,
                mlp,
            }),
            _ => candle_core::bail!("the tracked forward kept an incomplete {what}"),
        }
    }
}

/// The tape: keeps everything for the backward.
#[derive(Debug, Default)]
pub(super) struct SavingTape {
    text: Vec<Partial>,
    vision: Vec<Partial>,
    final_norm: Option<NormSaved>,
    projector: Vec<(usize, Tensor)>,
}

fn one(t: Tensor) -> Result<Tensor> {
    t.squeeze(0)
}

impl SavingTape {
    fn layer(&mut self, site: Site) -> &mut Partial {
        let layers = match site.tower {
            Tower::Text => &mut self.text,
            Tower::Vision => &mut self.vision,
        };
        if layers.len() <= site.layer {
            layers.resize_with(site.layer + 1, Partial::default);
        }
        &mut layers[site.layer]
    }

    /// The decoder layers' records, in order.
    pub fn take_text(&mut self) -> Result<Vec<LayerSaved>> {
        std::mem::take(&mut self.text)
            .into_iter()
            .map(|p| p.complete("decoder layer"))
            .collect()
    }

    /// The vision layers' records, in order.
    pub fn take_vision(&mut self) -> Result<Vec<LayerSaved>> {
        std::mem::take(&mut self.vision)
            .into_iter()
            .map(|p| p.complete("vision layer"))
            .collect()
    }

    /// The decoder's final norm.
    pub fn take_final_norm(&mut self) -> Result<NormSaved> {
        self.final_norm
            .take()
            .ok_or_else(|| candle_core::Error::Msg("the tracked forward kept no final norm".into()))
    }

    /// act' of projector layers 1.., in order.
    pub fn take_projector(&mut self) -> Vec<Tensor> {
        let mut p = std::mem::take(&mut self.projector);
        p.sort_by_key(|(i, _)| *i);
        p.into_iter().map(|(_, t)| t).collect()
    }
}

impl Tape for SavingTape {
    fn keeps_activations(&self) -> bool {
        true
    }

    fn allows_batch(&self) -> bool {
        false
    }

    fn save_norm(&mut self, site: Site, slot: NormSlot, saved: NormSaved) -> Result<()> {
        let saved = NormSaved {
            xhat: one(saved.xhat)?,
            inv: one(saved.inv)?,
        };
        match slot {
            NormSlot::Attention => self.layer(site).norm1 = Some(saved),
            NormSlot::Mlp => self.layer(site).norm2 = Some(saved),
            NormSlot::Final => self.final_norm = Some(saved),
        }
        Ok(())
    }

    fn save_attention(&mut self, site: Site, saved: AttnSaved) -> Result<()> {
        self.layer(site).attn = Some(AttnSaved {
            q: one(saved.q)?,
            k: one(saved.k)?,
            v: one(saved.v)?,
            probs: one(saved.probs)?,
        });
        Ok(())
    }

    fn save_mlp(&mut self, site: Site, saved: MlpSaved) -> Result<()> {
        self.layer(site).mlp = Some(MlpSaved {
            act: saved.act.map(one).transpose()?,
            dact: one(saved.dact)?,
        });
        Ok(())
    }

    fn save_projector(&mut self, layer: usize, dact: Tensor) -> Result<()> {
        self.projector.push((layer, one(dact)?));
        Ok(())
    }
}
