//! The LLaMA decoder's forward pass keeping what the backward needs, and its batched backward
//! with the relevancy rows accumulated layer by layer (last layer first).

use candle_core::{DType, Device, Module, Result, Tensor};

use super::grad::{self, AttnSaved, NormSaved};
use crate::model::llama::{Block, Llama};

/// The seeds' query rows: positions `[B]`, flat indices `b·n + q_b`, and n.
struct Rows<'t> {
    pos: &'t Tensor,
    flat: &'t Tensor,
    n: usize,
}

impl Rows<'_> {
    /// `[B, cols]` rows placed at the query rows of a zero `[B, n, cols]`.
    fn scatter(&self, rows: &Tensor) -> Result<Tensor> {
        let (b, cols) = rows.dims2()?;
        Tensor::zeros((b * self.n, cols), rows.dtype(), rows.device())?
            .index_add(self.flat, rows, 0)?
            .reshape((b, self.n, cols))
    }
}

/// What one decoder layer keeps.
struct LayerSaved {
    norm1: NormSaved,
    attn: AttnSaved,
    norm2: NormSaved,
    /// act(gate(h)), `[n, inter]`.
    act: Tensor,
    /// up(h) ⊙ act'(gate(h)), `[n, inter]`.
    up_dact: Tensor,
}

/// The decoder's forward pass over `n` positions with everything kept for the backward.
pub(super) struct DecoderPass<'a> {
    llama: &'a Llama,
    layers: Vec<LayerSaved>,
    final_norm: NormSaved,
    /// Output of the last layer, `[n, hidden]`.
    last: Tensor,
    cos: Tensor,
    neg_sin: Tensor,
}

fn causal_mask(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (n, n), device)?.to_dtype(dtype)
}

fn layer_forward(
    block: &Block,
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    mask: &Tensor,
) -> Result<(Tensor, LayerSaved)> {
    let n = x.dim(0)?;
    let at = &block.self_attn;
    let (nh, nkv, d) = (at.num_heads, at.num_kv_heads, at.head_dim);
    let ln1 = &block.input_layernorm;
    let (h, norm1) = grad::rms_forward(x, &ln1.weight, ln1.eps)?;
    let heads = |t: Tensor, k: usize| -> Result<Tensor> {
        t.reshape((n, k, d))?.transpose(0, 1)?.contiguous()
    };
    let rope = |t: Tensor| -> Result<Tensor> {
        candle_nn::rotary_emb::rope(&t.unsqueeze(0)?, cos, sin)?.squeeze(0)
    };
    let q = rope(heads(at.q_proj.forward(&h)?, nh)?)?;
    let k = rope(heads(at.k_proj.forward(&h)?, nkv)?)?;
    let v = heads(at.v_proj.forward(&h)?, nkv)?;
    let n_rep = nh / nkv;
    let scores = (q.reshape((nkv, n_rep * n, d))?.matmul(&k.t()?)? * at.scale)?
        .reshape((nh, n, n))?
        .broadcast_add(mask)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?;
    let out = probs
        .to_dtype(v.dtype())?
        .reshape((nkv, n_rep * n, n))?
        .matmul(&v)?
        .reshape((nh, n, d))?
        .transpose(0, 1)?
        .reshape((n, nh * d))?;
    let xm = (x + at.o_proj.forward(&out)?)?;
    let ln2 = &block.post_attention_layernorm;
    let (h2, norm2) = grad::rms_forward(&xm, &ln2.weight, ln2.eps)?;
    let mlp = &block.mlp;
    let gate = mlp.gate_proj.forward(&h2)?;
    let up = mlp.up_proj.forward(&h2)?;
    let act = mlp.act.forward(&gate)?;
    let up_dact = (&up * grad::act_derivative(mlp.act, &gate)?)?;
    let y = (&xm + mlp.down_proj.forward(&(&act * &up)?)?)?;
    let saved = LayerSaved {
        norm1,
        attn: AttnSaved { q, k, v, probs },
        norm2,
        act,
        up_dact,
    };
    Ok((y, saved))
}

impl<'a> DecoderPass<'a> {
    /// Run the decoder over `embeds` `[n, hidden]` (positions `0..n`).
    pub(super) fn forward(llama: &'a Llama, embeds: &Tensor) -> Result<Self> {
        let (n, _) = embeds.dims2()?;
        let dtype = llama.embeddings().dtype();
        let device = embeds.device();
        let (cos, sin) = llama.rope.cos_sin(0, n, dtype, device)?;
        let mask = causal_mask(n, dtype, device)?;
        let mut x = embeds.to_dtype(dtype)?;
        let mut layers = Vec::with_capacity(llama.layers.len());
        for block in &llama.layers {
            let (y, saved) = layer_forward(block, &x, &cos, &sin, &mask)?;
            layers.push(saved);
            x = y;
        }
        let (_, final_norm) = grad::rms_forward(&x, &llama.norm.weight, llama.norm.eps)?;
        let neg_sin = sin.neg()?;
        Ok(Self {
            llama,
            layers,
            final_norm,
            last: x,
            cos,
            neg_sin,
        })
    }

    /// f32 logits `[positions.len(), vocab]` at the given positions (for checks).
    pub(super) fn logits(&self, positions: &[usize]) -> Result<Tensor> {
        let idx = positions.iter().map(|&p| p as u32).collect::<Vec<_>>();
        let idx = Tensor::new(idx.as_slice(), self.last.device())?;
        let x = self.last.index_select(&idx, 0)?;
        let x = self.llama.norm.forward(&x)?;
        self.llama.lm_head.forward(&x)?.to_dtype(DType::F32)
    }

    /// Backward of the last layer, where each seed's gradient is one row (its query
    /// position): the MLP and the queries are done on those rows only, the attention's
    /// gradients are outer products. Returns `e_q + Ā_L[q]` `[B, n]` and the gradient of the
    /// layer's input `[B, n, hidden]`.
    fn top_backward(
        &self,
        block: &Block,
        saved: &LayerSaved,
        seed: &Tensor,
        rows: &Rows,
    ) -> Result<(Tensor, Tensor)> {
        let (b, hidden) = seed.dims2()?;
        let n = rows.n;
        let sel = |t: &Tensor| t.index_select(rows.pos, 0);
        let mlp = &block.mlp;
        let dm = seed.matmul(mlp.down_proj.weight())?;
        let du = (&dm * sel(&saved.act)?)?;
        let dg = (&dm * sel(&saved.up_dact)?)?;
        let dh2 = (dg.matmul(mlp.gate_proj.weight())? + du.matmul(mlp.up_proj.weight())?)?;
        let norm2 = NormSaved {
            xhat: sel(&saved.norm2.xhat)?,
            inv: sel(&saved.norm2.inv)?,
        };
        let dxm =
            (seed + grad::rms_backward(&norm2, &block.post_attention_layernorm.weight, &dh2)?)?;
        let at = &block.self_attn;
        let (nh, nkv, d) = (at.num_heads, at.num_kv_heads, at.head_dim);
        let n_rep = nh / nkv;
        let a = &saved.attn;
        // dO rows [heads, B, d]; ∇A rows = dO Vᵀ [heads, B, n]
        let d_o = dxm
            .matmul(at.o_proj.weight())?
            .reshape((b, nh, d))?
            .transpose(0, 1)?
            .contiguous()?;
        let grad_a = d_o
            .reshape((nkv, n_rep * b, d))?
            .matmul(&a.v.t()?)?
            .reshape((nh, b, n))?
            .to_dtype(DType::F32)?;
        let probs = a.probs.index_select(rows.pos, 1)?; // [heads, B, n]
        let ga = (&grad_a * &probs)?;
        let abar = (ga.relu()?.sum(0)? / nh as f64)?;
        let ones = Tensor::ones((b, 1), DType::F32, seed.device())?;
        let r = (rows.scatter(&ones)?.squeeze(2)? + abar)?;
        let ds = grad_a
            .broadcast_sub(&ga.sum_keepdim(2)?)?
            .mul(&probs)?
            .to_dtype(seed.dtype())?;
        // dQ rows [heads, B, d], RoPE undone at each seed's own position
        let dq = (ds
            .reshape((nkv, n_rep * b, n))?
            .matmul(&a.k)?
            .reshape((nh, b, d))?
            * at.scale)?;
        let half = d / 2;
        let (c, s) = (
            self.cos.index_select(rows.pos, 0)?.unsqueeze(0)?,
            self.neg_sin
                .index_select(rows.pos, 0)?
                .neg()?
                .unsqueeze(0)?,
        );
        let (g1, g2) = (dq.narrow(2, 0, half)?, dq.narrow(2, half, half)?);
        let dq = Tensor::cat(
            &[
                (g1.broadcast_mul(&c)? + g2.broadcast_mul(&s)?)?,
                (g2.broadcast_mul(&c)? - g1.broadcast_mul(&s)?)?,
            ],
            2,
        )?;
        let dq = dq.transpose(0, 1)?.reshape((b, nh * d))?;
        // dK[h, b, k] = scale · dS[h, b, k] · Q[h, q_b]; dV[h, b, k] = A[h, q_b, k] · dO[h, b]
        let q_rows = a.q.index_select(rows.pos, 1)?; // [heads, B, d]
        let group = |t: Tensor| -> Result<Tensor> {
            t.reshape((nkv, n_rep, b, n, d))?
                .sum(1)?
                .permute((1, 0, 2, 3))?
                .contiguous()
        };
        let dk = group((ds.unsqueeze(3)?.broadcast_mul(&q_rows.unsqueeze(2)?)? * at.scale)?)?;
        let dk = candle_nn::rotary_emb::rope(&dk, &self.cos, &self.neg_sin)?;
        let dv = group(
            probs
                .to_dtype(seed.dtype())?
                .unsqueeze(3)?
                .broadcast_mul(&d_o.unsqueeze(2)?)?,
        )?;
        let flat = |t: Tensor| -> Result<Tensor> {
            t.transpose(1, 2)?.contiguous()?.reshape((b * n, nkv * d))
        };
        let dh1 = (flat(dk)?.matmul(at.k_proj.weight())?
            + flat(dv)?.matmul(at.v_proj.weight())?)?
        .reshape((b, n, hidden))?;
        let dh1 = (dh1 + rows.scatter(&dq.matmul(at.q_proj.weight())?)?)?;
        let dx = (rows.scatter(&dxm)?
            + grad::rms_backward(&saved.norm1, &block.input_layernorm.weight, &dh1)?)?;
        Ok((r, dx))
    }

    /// Backward from the logits `ids[i]` at `positions[i]`, one seed each. Returns the rows
    /// `e_qᵀ (I + Ā_L) ⋯ (I + Ā_1)` `[B, n]` (f32) and the gradient of the input embeddings
    /// `[B, n, hidden]`.
    pub(super) fn backward(&self, positions: &[usize], ids: &[u32]) -> Result<(Tensor, Tensor)> {
        let (n, hidden) = self.last.dims2()?;
        let b = positions.len();
        let device = self.last.device();
        let dtype = self.last.dtype();
        // seed: d logit / d x_last at the query row, through the final norm
        let id_t = Tensor::new(ids, device)?;
        let pos = positions.iter().map(|&p| p as u32).collect::<Vec<_>>();
        let pos_t = Tensor::new(pos.as_slice(), device)?;
        let w_rows = self.llama.lm_head.weight().index_select(&id_t, 0)?; // [B, hidden]
        let sel = NormSaved {
            xhat: self.final_norm.xhat.index_select(&pos_t, 0)?,
            inv: self.final_norm.inv.index_select(&pos_t, 0)?,
        };
        let seed = grad::rms_backward(&sel, &self.llama.norm.weight, &w_rows)?.to_dtype(dtype)?;
        let flat_idx: Vec<u32> = pos
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * n) as u32 + p)
            .collect();
        let flat_idx = Tensor::new(flat_idx.as_slice(), device)?;
        let rows = Rows {
            pos: &pos_t,
            flat: &flat_idx,
            n,
        };
        let (top, below) = match self.llama.layers.split_last() {
            Some(t) => t,
            None => candle_core::bail!("the decoder has no layer"),
        };
        let top_saved = match self.layers.last() {
            Some(s) => s,
            None => candle_core::bail!("the decoder pass kept no layer"),
        };
        let (mut r, mut dx) = self.top_backward(top, top_saved, &seed, &rows)?;
        for (block, saved) in below.iter().zip(&self.layers).rev() {
            // MLP branch
            let mlp = &block.mlp;
            let dm = grad::linear_backward(&dx, mlp.down_proj.weight())?;
            let du = dm.broadcast_mul(&saved.act)?;
            let dg = dm.broadcast_mul(&saved.up_dact)?;
            let dh2 = (grad::linear_backward(&dg, mlp.gate_proj.weight())?
                + grad::linear_backward(&du, mlp.up_proj.weight())?)?;
            let dxm = (&dx
                + grad::rms_backward(&saved.norm2, &block.post_attention_layernorm.weight, &dh2)?)?;
            // attention branch
            let at = &block.self_attn;
            let d_out = grad::linear_backward(&dxm, at.o_proj.weight())?;
            let g = grad::attn_backward(
                &saved.attn,
                &d_out,
                at.scale,
                Some((&self.cos, &self.neg_sin)),
                true,
            )?;
            r = grad::rollout_step(&r, &g.abar)?;
            let (dq, dk, dv) = match g.dqkv {
                Some(t) => t,
                None => candle_core::bail!("attention backward gave no input gradients"),
            };
            let dh1 = (dq.matmul(at.q_proj.weight())?
                + dk.matmul(at.k_proj.weight())?
                + dv.matmul(at.v_proj.weight())?)?
            .reshape((b, n, hidden))?;
            dx = (dxm + grad::rms_backward(&saved.norm1, &block.input_layernorm.weight, &dh1)?)?;
        }
        Ok((r, dx))
    }
}
