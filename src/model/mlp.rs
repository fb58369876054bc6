//! The two MLP shapes: gated (`down(act(gate(x)) ⊙ up(x))`: SwiGLU of LLaMA, Mistral and
//! Qwen2, GeGLU of Gemma) and plain (`fc2(act(fc1(x)))`: CLIP and SigLIP), with their backward
//! rules.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::ops::{linear_backward, Activation};
use super::tape::{MlpSaved, Site, Tape};

/// Gated MLP: down(act(gate(x)) ⊙ up(x)).
#[derive(Debug, Clone)]
pub struct GatedMlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    act: Activation,
}

impl GatedMlp {
    /// Load from `vb` (prefix `mlp`): hidden `h`, inner size `inner`, biases when `bias`.
    pub fn load(
        vb: VarBuilder,
        h: usize,
        inner: usize,
        bias: bool,
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            gate_proj: candle_nn::linear_b(h, inner, bias, vb.pp("gate_proj"))?,
            up_proj: candle_nn::linear_b(h, inner, bias, vb.pp("up_proj"))?,
            down_proj: candle_nn::linear_b(inner, h, bias, vb.pp("down_proj"))?,
            act,
        })
    }

    /// Apply the MLP; a tape that keeps activations gets act(gate) and up ⊙ act'(gate).
    pub fn forward(&self, xs: &Tensor, tape: &mut dyn Tape, site: Site) -> Result<Tensor> {
        let gate = self.gate_proj.forward(xs)?;
        let up = self.up_proj.forward(xs)?;
        let act = self.act.forward(&gate)?;
        let y = self.down_proj.forward(&(&act * &up)?)?;
        if tape.keeps_activations() {
            let dact = (&up * self.act.derivative(&gate)?)?;
            tape.save_mlp(
                site,
                MlpSaved {
                    act: Some(act),
                    dact,
                },
            )?;
        }
        Ok(y)
    }

    /// Backward: `dy` `[.., hidden]` → gradient of the input. `saved` must have the rows of
    /// `dy` (or broadcast to them).
    pub(crate) fn backward(&self, saved: &MlpSaved, dy: &Tensor) -> Result<Tensor> {
        let Some(act) = &saved.act else {
            candle_core::bail!("a gated MLP's backward needs act(gate)");
        };
        let dm = linear_backward(dy, self.down_proj.weight())?;
        let du = dm.broadcast_mul(act)?;
        let dg = dm.broadcast_mul(&saved.dact)?;
        linear_backward(&dg, self.gate_proj.weight())?
            + linear_backward(&du, self.up_proj.weight())?
    }
}

/// Plain MLP: fc2(act(fc1(x))).
#[derive(Debug, Clone)]
pub struct PlainMlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl PlainMlp {
    /// Load from `vb` (prefix `mlp`): hidden `h`, inner size `inner`, with biases.
    pub fn load(vb: VarBuilder, h: usize, inner: usize, act: Activation) -> Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(h, inner, vb.pp("fc1"))?,
            fc2: candle_nn::linear(inner, h, vb.pp("fc2"))?,
            act,
        })
    }

    /// Apply the MLP; a tape that keeps activations gets act'(fc1(x)).
    pub fn forward(&self, xs: &Tensor, tape: &mut dyn Tape, site: Site) -> Result<Tensor> {
        let pre = self.fc1.forward(xs)?;
        if tape.keeps_activations() {
            let dact = self.act.derivative(&pre)?;
            tape.save_mlp(site, MlpSaved { act: None, dact })?;
        }
        self.fc2.forward(&self.act.forward(&pre)?)
    }

    /// Backward: `dy` `[.., hidden]` → gradient of the input.
    pub(crate) fn backward(&self, saved: &MlpSaved, dy: &Tensor) -> Result<Tensor> {
        let dpre = linear_backward(dy, self.fc2.weight())?.broadcast_mul(&saved.dact)?;
        linear_backward(&dpre, self.fc1.weight())
    }
}
