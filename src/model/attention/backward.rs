//! Backward rules of [`Attention`], batched over several seeds (one seed per output token).
//! Batched tensors carry the seed index `B` first (`[B, n, hidden]`), except attention-sized
//! tensors, laid out `[heads, n_q, B, n_k]` so that every product below is one plain (strided)
//! matrix product without copies. `saved` is one sequence's [`AttnSaved`] with the batch
//! dimension dropped (`q` `[heads, n, d]`, `probs` `[heads, n, n]`).

use candle_core::{DType, Result, Tensor};

use super::Attention;
use crate::model::ops::linear_backward;
use crate::model::tape::AttnSaved;

/// The seeds' query rows: positions `[B]`, flat indices `b·n + q_b` `[B]`, and n.
pub(crate) struct SeedRows<'t> {
    /// Query position of each seed.
    pub pos: &'t Tensor,
    /// `b·n + pos[b]`.
    pub flat: &'t Tensor,
    /// Sequence length.
    pub n: usize,
}

impl SeedRows<'_> {
    /// `[B, cols]` rows placed at the query rows of a zero `[B, n, cols]`.
    pub fn scatter(&self, rows: &Tensor) -> Result<Tensor> {
        let (b, cols) = rows.dims2()?;
        Tensor::zeros((b * self.n, cols), rows.dtype(), rows.device())?
            .index_add(self.flat, rows, 0)?
            .reshape((b, self.n, cols))
    }
}

/// Gradients out of one attention layer's backward.
pub(crate) struct AttnGrads {
    /// `mean_heads(clamp(∇A ⊙ A, min = 0))`: `[n_q, B, n_k]` (full backward) or `[B, n_k]`
    /// (rows backward), f32.
    pub abar: Tensor,
    /// Gradient of the layer's input `[B, n, hidden]`, unless not asked for.
    pub dx: Option<Tensor>,
}

impl Attention {
    /// RoPE undone on `[B, heads, n, d]` gradients with `cos`, `−sin` `[n, d/2]`.
    fn unrope(t: Tensor, rope: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
        match rope {
            Some((cos, neg_sin)) => candle_nn::rotary_emb::rope(&t, cos, neg_sin),
            None => Ok(t),
        }
    }

    /// Input gradient from the gradients of the q/k/v projections' outputs `[B·n, ·]`.
    fn qkv_input(&self, dq: &Tensor, dk: &Tensor, dv: &Tensor) -> Result<Tensor> {
        dq.matmul(self.q_proj.weight())?
            + dk.matmul(self.k_proj.weight())?
            + dv.matmul(self.v_proj.weight())?
    }

    /// Backward of the whole layer for gradients `dy` `[B, n, hidden]` of its output at every
    /// position. `rope`: `(cos, −sin)` of positions `0..n` to undo the rotary embedding.
    /// With `need_input` false only `abar` is computed (the lowest layer).
    pub(crate) fn backward(
        &self,
        s: &AttnSaved,
        dy: &Tensor,
        rope: Option<(&Tensor, &Tensor)>,
        need_input: bool,
    ) -> Result<AttnGrads> {
        let d_out = linear_backward(dy, self.o_proj.weight())?;
        let (nh, n, d) = s.q.dims3()?;
        let nkv = s.k.dim(0)?;
        let n_rep = nh / nkv;
        let (b, _, hidden) = dy.dims3()?;
        let dtype = d_out.dtype();
        // dO laid out [heads, n_q, B, d]
        let d_o = d_out
            .reshape((b, n, nh, d))?
            .permute((2, 1, 0, 3))?
            .contiguous()?;
        // ∇A = dO Vᵀ, grouped: [kv, n_rep·n_q·B, d] × [kv, d, n_k]
        let grad_a = d_o
            .reshape((nkv, n_rep * n * b, d))?
            .matmul(&s.v.t()?)?
            .reshape((nh, n, b, n))?
            .to_dtype(DType::F32)?;
        // On the CPU the element-wise steps below run fused (`fused.rs`), the same numbers.
        let cpu = grad_a.device().is_cpu();
        let a = s.probs.unsqueeze(2)?; // [heads, n_q, 1, n_k]
        let (abar, ga) = if cpu {
            (super::fused::abar(&grad_a, &s.probs)?, None)
        } else {
            let ga = grad_a.broadcast_mul(&a)?;
            ((ga.relu()?.sum(0)? / nh as f64)?, Some(ga))
        };
        if !need_input {
            return Ok(AttnGrads { abar, dx: None });
        }
        // softmax backward: dS = A ⊙ (∇A − Σ_k ∇A ⊙ A)
        // (the score scale is applied to dQ and dK, which are smaller)
        let ds = match ga {
            None => super::fused::ds(&grad_a, &s.probs)?,
            Some(ga) => {
                let rowsum = ga.sum_keepdim(3)?;
                drop(ga);
                grad_a.broadcast_sub(&rowsum)?.broadcast_mul(&a)?
            }
        }
        .to_dtype(dtype)?;
        drop(grad_a);
        // dQ = dS K: [kv, n_rep·n_q·B, n_k] × [kv, n_k, d] → [heads, n_q, B, d]
        let dq = (ds
            .reshape((nkv, n_rep * n * b, n))?
            .matmul(&s.k)?
            .reshape((nh, n, b, d))?
            * self.scale)?;
        // dKᵀ = Σ over a KV group's heads of Qᵀ dS, the sum inside one product (a separate sum
        // over the group is a slow strided reduction on CUDA):
        // [kv, d, n_rep·n_q] × [kv, n_rep·n_q, B·n_k] → [kv, d, B, n_k]
        let dkt =
            (s.q.reshape((nkv, n_rep * n, d))?
                .t()?
                .matmul(&ds.reshape((nkv, n_rep * n, b * n))?)?
                .reshape((nkv, d, b, n))?
                * self.scale)?;
        drop(ds);
        // dV = Σ over the group of Aᵀ dO, likewise:
        // [kv, n_k, n_rep·n_q] × [kv, n_rep·n_q, B·d] → [kv, n_k, B, d]
        let dv = s
            .probs
            .to_dtype(dtype)?
            .reshape((nkv, n_rep * n, n))?
            .t()?
            .matmul(&d_o.reshape((nkv, n_rep * n, b * d))?)?
            .reshape((nkv, n, b, d))?;
        // to [B, heads, n, d] (what RoPE wants), undo RoPE, then [B·n, heads·d]
        let dq = Self::unrope(dq.permute((2, 0, 1, 3))?.contiguous()?, rope)?;
        let dk = Self::unrope(dkt.permute((2, 0, 3, 1))?.contiguous()?, rope)?;
        let flat = |t: Tensor, heads: usize| -> Result<Tensor> {
            t.transpose(1, 2)?.contiguous()?.reshape((b * n, heads * d))
        };
        let dv = dv
            .permute((2, 1, 0, 3))?
            .contiguous()?
            .reshape((b * n, nkv * d))?;
        let dx = self
            .qkv_input(&flat(dq, nh)?, &flat(dk, nkv)?, &dv)?
            .reshape((b, n, hidden))?;
        Ok(AttnGrads { abar, dx: Some(dx) })
    }

    /// Backward of the layer when each seed's gradient `dy` `[B, hidden]` is one row (its
    /// query position, `rows`): the queries are done on those rows only, the keys' and values'
    /// gradients are outer products. `rope`: `(cos, −sin)` of positions `0..n`.
    pub(crate) fn backward_rows(
        &self,
        s: &AttnSaved,
        dy: &Tensor,
        rows: &SeedRows,
        rope: Option<(&Tensor, &Tensor)>,
    ) -> Result<AttnGrads> {
        let (b, hidden) = dy.dims2()?;
        let n = rows.n;
        let (nh, nkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let n_rep = nh / nkv;
        // dO rows [heads, B, d]; ∇A rows = dO Vᵀ [heads, B, n]
        let d_o = dy
            .matmul(self.o_proj.weight())?
            .reshape((b, nh, d))?
            .transpose(0, 1)?
            .contiguous()?;
        let grad_a = d_o
            .reshape((nkv, n_rep * b, d))?
            .matmul(&s.v.t()?)?
            .reshape((nh, b, n))?
            .to_dtype(DType::F32)?;
        let probs = s.probs.index_select(rows.pos, 1)?; // [heads, B, n]
        let ga = (&grad_a * &probs)?;
        let abar = (ga.relu()?.sum(0)? / nh as f64)?;
        let ds = grad_a
            .broadcast_sub(&ga.sum_keepdim(2)?)?
            .mul(&probs)?
            .to_dtype(dy.dtype())?;
        // dQ rows [heads, B, d], RoPE undone at each seed's own position
        let dq = (ds
            .reshape((nkv, n_rep * b, n))?
            .matmul(&s.k)?
            .reshape((nh, b, d))?
            * self.scale)?;
        let dq = match rope {
            Some((cos, neg_sin)) => {
                let c = cos.index_select(rows.pos, 0)?.unsqueeze(0)?;
                let sn = neg_sin.index_select(rows.pos, 0)?.neg()?.unsqueeze(0)?;
                let half = d / 2;
                let (g1, g2) = (dq.narrow(2, 0, half)?, dq.narrow(2, half, half)?);
                Tensor::cat(
                    &[
                        (g1.broadcast_mul(&c)? + g2.broadcast_mul(&sn)?)?,
                        (g2.broadcast_mul(&c)? - g1.broadcast_mul(&sn)?)?,
                    ],
                    2,
                )?
            }
            None => dq,
        };
        let dq = dq.transpose(0, 1)?.reshape((b, nh * d))?;
        // dK[h, b, k] = scale · dS[h, b, k] · Q[h, q_b]; dV[h, b, k] = A[h, q_b, k] · dO[h, b]
        let q_rows = s.q.index_select(rows.pos, 1)?; // [heads, B, d]
        let group = |t: Tensor| -> Result<Tensor> {
            t.reshape((nkv, n_rep, b, n, d))?
                .sum(1)?
                .permute((1, 0, 2, 3))?
                .contiguous()
        };
        let dk = group((ds.unsqueeze(3)?.broadcast_mul(&q_rows.unsqueeze(2)?)? * self.scale)?)?;
        let dk = Self::unrope(dk, rope)?;
        let dv = group(
            probs
                .to_dtype(dy.dtype())?
                .unsqueeze(3)?
                .broadcast_mul(&d_o.unsqueeze(2)?)?,
        )?;
        let flat = |t: Tensor| -> Result<Tensor> {
            t.transpose(1, 2)?.contiguous()?.reshape((b * n, nkv * d))
        };
        let dx = (flat(dk)?.matmul(self.k_proj.weight())?
            + flat(dv)?.matmul(self.v_proj.weight())?)?
        .reshape((b, n, hidden))?;
        let dx = (dx + rows.scatter(&dq.matmul(self.q_proj.weight())?)?)?;
        Ok(AttnGrads { abar, dx: Some(dx) })
    }
}
