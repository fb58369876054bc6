//! Qwen2.5-VL's window attention computed window by window: when no tape observes a windowed
//! block, or all it wants is the attention each patch receives ([`Tape::wants_received_only`]),
//! the block runs over `[windows, size, embed]` batches instead of one masked `[P, P]` product
//! (`tools/bench_qwen_vl.py` measured the difference).

use candle_core::{Device, Result, Tensor};

use super::vision::Block;
use crate::model::attention::AttnInputs;
use crate::model::tape::{AttnSaved, MlpSaved, NormSaved, NormSlot, Site, Tape};

/// The patches of each window, windows of equal size batched together, so that a windowed
/// block whose attention no tape observes runs window by window: the same block forward over
/// `[windows, size, embed]` instead of one `[P, P]` product with a mask. Norms and MLPs act
/// per patch, so only the attention's arrangement changes, and keys outside a window get
/// weight exactly zero either way.
pub(super) struct WindowGroups {
    /// Per window size: the patch indices (processor order), window after window.
    groups: Vec<(usize, Tensor)>,
    /// Where each patch of the processor order sits in the grouped order.
    inverse: Tensor,
}

impl WindowGroups {
    pub(super) fn new(windows: &[(usize, usize)], device: &Device) -> Result<Self> {
        let mut by_window: std::collections::BTreeMap<(usize, usize), Vec<u32>> =
            std::collections::BTreeMap::new();
        for (p, w) in windows.iter().enumerate() {
            by_window.entry(*w).or_default().push(p as u32);
        }
        let mut by_size: std::collections::BTreeMap<usize, Vec<u32>> =
            std::collections::BTreeMap::new();
        for patches in by_window.into_values() {
            by_size.entry(patches.len()).or_default().extend(patches);
        }
        let mut inverse = vec![0u32; windows.len()];
        let mut at = 0u32;
        let mut groups = Vec::with_capacity(by_size.len());
        for (size, patches) in by_size {
            for &p in &patches {
                inverse[p as usize] = at;
                at += 1;
            }
            groups.push((size, Tensor::new(patches.as_slice(), device)?));
        }
        Ok(Self {
            groups,
            inverse: Tensor::new(inverse.as_slice(), device)?,
        })
    }

    /// `block` over `xs` `[1, P, embed]`, attention within each window; a tape that
    /// [`Tape::wants_received_only`] gets each patch's attention averaged over its window's
    /// queries ([`Tape::received`], processor order).
    pub(super) fn forward(
        &self,
        block: &Block,
        xs: &Tensor,
        rope: (&Tensor, &Tensor),
        tape: &mut dyn Tape,
    ) -> Result<Tensor> {
        let site = block.site();
        if !tape.wants_received_only(site) {
            return self.run(block, xs, rope, tape);
        }
        let mut windows = WindowRows {
            inner: tape,
            site,
            rows: Vec::new(),
        };
        let out = self.run(block, xs, rope, &mut windows)?;
        // Each group's `[count, H, size]` column means, laid out as its patches are, then put
        // back in processor order.
        let parts = windows
            .rows
            .iter()
            .map(|r| {
                let (count, heads, size) = r.dims3()?;
                r.transpose(0, 1)?.reshape((heads, count * size))
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = Tensor::cat(&parts, 1)?
            .index_select(&self.inverse, 1)?
            .unsqueeze(0)?;
        tape.received(site, &rows)?;
        Ok(out)
    }

    /// `block` over `xs` window by window, every hook through `tape`.
    fn run(
        &self,
        block: &Block,
        xs: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        tape: &mut dyn Tape,
    ) -> Result<Tensor> {
        let flat = xs.squeeze(0)?;
        let (_, embed) = flat.dims2()?;
        let half = cos.dim(1)?;
        let mut outs = Vec::with_capacity(self.groups.len());
        for (size, index) in &self.groups {
            let count = index.dim(0)? / size;
            let part = flat
                .index_select(index, 0)?
                .reshape((count, *size, embed))?;
            let c = cos.index_select(index, 0)?.reshape((count, *size, half))?;
            let s = sin.index_select(index, 0)?.reshape((count, *size, half))?;
            let inputs = AttnInputs {
                rope: Some((&c, &s)),
                mask: None,
                offset: 0,
            };
            outs.push(
                block
                    .forward(&part, &inputs, tape)?
                    .reshape((count * size, embed))?,
            );
        }
        Tensor::cat(&outs, 0)?
            .index_select(&self.inverse, 0)?
            .unsqueeze(0)
    }
}

/// The tape a windowed block runs with when its tape wants only the attention received: the
/// probabilities of `site` (`[windows, H, size, size]` a group) become their column means,
/// kept in `rows`; every other hook goes to `inner`.
struct WindowRows<'a> {
    inner: &'a mut dyn Tape,
    site: Site,
    rows: Vec<Tensor>,
}

impl Tape for WindowRows<'_> {
    fn keeps_activations(&self) -> bool {
        self.inner.keeps_activations()
    }

    fn allows_batch(&self) -> bool {
        self.inner.allows_batch()
    }

    fn observes(&self, site: Site) -> bool {
        site == self.site || self.inner.observes(site)
    }

    fn scores(&mut self, site: Site, scores: Tensor, q_offset: usize) -> Result<Tensor> {
        if site == self.site {
            return Ok(scores);
        }
        self.inner.scores(site, scores, q_offset)
    }

    fn probs(&mut self, site: Site, probs: Tensor, q_offset: usize) -> Result<Tensor> {
        if site != self.site {
            return self.inner.probs(site, probs, q_offset);
        }
        self.rows.push(probs.mean(2)?);
        Ok(probs)
    }

    fn save_norm(&mut self, site: Site, slot: NormSlot, saved: NormSaved) -> Result<()> {
        self.inner.save_norm(site, slot, saved)
    }

    fn save_attention(&mut self, site: Site, saved: AttnSaved) -> Result<()> {
        self.inner.save_attention(site, saved)
    }

    fn save_mlp(&mut self, site: Site, saved: MlpSaved) -> Result<()> {
        self.inner.save_mlp(site, saved)
    }

    fn save_projector(&mut self, layer: usize, dact: Tensor) -> Result<()> {
        self.inner.save_projector(layer, dact)
    }

    fn layer_output(&mut self, site: Site, xs: &Tensor) -> Result<()> {
        self.inner.layer_output(site, xs)
    }

    fn end_forward(&mut self) -> Result<()> {
        self.inner.end_forward()
    }
}
