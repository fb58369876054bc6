//! The hook every block's forward pass calls: what a forward keeps, and (later) how it may
//! change attention.
//!
//! Each block (norm, attention, MLP, projector) has one forward implementation that takes a
//! `&mut dyn Tape`. Three tapes exist:
//! - [`NoTape`]: plain generation, keeps nothing.
//! - [`crate::model::AttentionRecorder`]: keeps the attention probabilities the session stores.
//! - the tracked pass of [`crate::model::tracked`]: keeps what the hand-written backward needs
//!   (norm statistics, queries/keys/values/probabilities, MLP activations and derivatives).
//!
//! The attention hooks return the tensor the layer continues with, so an intervention (mask
//! keys, scale a head) can be a tape that returns changed scores or probabilities; every tape
//! here returns its input unchanged (the interventions are in [`crate::model::interventions`]).

use candle_core::{Result, Tensor};

/// Which tower a layer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tower {
    /// The language decoder.
    Text,
    /// The vision encoder.
    Vision,
}

/// One layer of one tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Site {
    /// The tower.
    pub tower: Tower,
    /// The layer index within the tower (the decoder's final norm uses the layer count).
    pub layer: usize,
}

impl Site {
    /// Decoder layer `layer`.
    pub fn text(layer: usize) -> Self {
        Self {
            tower: Tower::Text,
            layer,
        }
    }

    /// Vision layer `layer`.
    pub fn vision(layer: usize) -> Self {
        Self {
            tower: Tower::Vision,
            layer,
        }
    }
}

/// Which normalisation of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NormSlot {
    /// Before the attention.
    Attention,
    /// Before the MLP.
    Mlp,
    /// The decoder's final norm (before the output head).
    Final,
}

/// What a normalisation keeps: the normalised input x̂ (f32, before the learned scale) and the
/// inverse scale per row (f32, last dimension 1).
#[derive(Debug, Clone)]
pub struct NormSaved {
    /// x̂, `[.., n, h]`.
    pub xhat: Tensor,
    /// 1/rms (RMSNorm) or 1/σ (LayerNorm), `[.., n, 1]`.
    pub inv: Tensor,
}

/// What an attention layer keeps, as the forward computed it (`[b, heads, n, ·]`).
#[derive(Debug, Clone)]
pub struct AttnSaved {
    /// Queries after RoPE, `[b, heads, n, d]` (model dtype).
    pub q: Tensor,
    /// Keys after RoPE, `[b, kv_heads, n, d]`.
    pub k: Tensor,
    /// Values, `[b, kv_heads, n, d]`.
    pub v: Tensor,
    /// Softmax probabilities the layer used, `[b, heads, n, n]`, f32.
    pub probs: Tensor,
}

/// What an MLP keeps.
#[derive(Debug, Clone)]
pub struct MlpSaved {
    /// Gated MLP: act(gate(h)); plain MLP: `None`.
    pub act: Option<Tensor>,
    /// Gated MLP: up(h) ⊙ act'(gate(h)); plain MLP: act'(fc1(h)).
    pub dact: Tensor,
}

/// The hook of the forward pass (see the module documentation).
pub trait Tape {
    /// Whether the forward should compute and hand over what a backward needs
    /// ([`Tape::save_norm`], [`Tape::save_attention`], [`Tape::save_mlp`],
    /// [`Tape::save_projector`]).
    fn keeps_activations(&self) -> bool {
        false
    }

    /// Whether the forward may run a batch of several sequences.
    fn allows_batch(&self) -> bool {
        true
    }

    /// Whether this tape reads or changes anything at `site`. When false, the hooks of that
    /// site return their input and keep nothing, so the forward may compute the layer in any
    /// equivalent arrangement (Qwen2.5-VL's window attention window by window instead of one
    /// masked `[P, P]` product). Defaults to true, which is always correct.
    fn observes(&self, site: Site) -> bool {
        let _ = site;
        true
    }

    /// Whether all this tape wants of `site`'s attention is what each key receives, averaged
    /// over the queries that can see it ([`Tape::received`]); a windowed block may then still
    /// run window by window, handing over each window's probabilities in turn. Defaults to
    /// false.
    fn wants_received_only(&self, site: Site) -> bool {
        let _ = site;
        false
    }

    /// Of `site`, `rows` `[1, heads, P]` (f32): for each key, its probability averaged over
    /// the queries that can see it (a windowed block: its window's). Called by a block that ran
    /// window by window because [`Tape::wants_received_only`].
    fn received(&mut self, site: Site, rows: &Tensor) -> Result<()> {
        let _ = (site, rows);
        Ok(())
    }

    /// Attention scores `[b, heads, q, kv]` (model dtype, mask added) of `site`, query rows
    /// starting at position `q_offset`; returns the scores the softmax takes.
    fn scores(&mut self, site: Site, scores: Tensor, q_offset: usize) -> Result<Tensor> {
        let _ = (site, q_offset);
        Ok(scores)
    }

    /// Attention probabilities `[b, heads, q, kv]` (f32) of `site`, query rows starting at
    /// position `q_offset`; returns the probabilities the layer continues with.
    fn probs(&mut self, site: Site, probs: Tensor, q_offset: usize) -> Result<Tensor> {
        let _ = (site, q_offset);
        Ok(probs)
    }

    /// A normalisation's statistics (only called when [`Tape::keeps_activations`]).
    fn save_norm(&mut self, site: Site, slot: NormSlot, saved: NormSaved) -> Result<()> {
        let _ = (site, slot, saved);
        Ok(())
    }

    /// An attention layer's inputs and probabilities (only when [`Tape::keeps_activations`]).
    fn save_attention(&mut self, site: Site, saved: AttnSaved) -> Result<()> {
        let _ = (site, saved);
        Ok(())
    }

    /// An MLP's activations (only when [`Tape::keeps_activations`]).
    fn save_mlp(&mut self, site: Site, saved: MlpSaved) -> Result<()> {
        let _ = (site, saved);
        Ok(())
    }

    /// act'(pre-activation) after projector layer `layer` (only when
    /// [`Tape::keeps_activations`]).
    fn save_projector(&mut self, layer: usize, dact: Tensor) -> Result<()> {
        let _ = (layer, dact);
        Ok(())
    }

    /// The output `[b, n, hidden]` (model dtype) of decoder layer `site.layer`: the residual
    /// stream after that layer, which a logit lens reads out.
    fn layer_output(&mut self, site: Site, xs: &Tensor) -> Result<()> {
        let _ = (site, xs);
        Ok(())
    }

    /// Called once at the end of every decoder forward call.
    fn end_forward(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The tape that keeps nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTape;

impl Tape for NoTape {
    fn observes(&self, _site: Site) -> bool {
        false
    }
}
