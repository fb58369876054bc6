//! Qwen2.5-VL's window attention computed window by window: when no tape observes a windowed
//! block, the block runs over `[windows, size, embed]` batches instead of one masked `[P, P]`
//! product (`tools/bench_qwen_vl.py` measured the difference).

use candle_core::{Device, Result, Tensor};

use super::vision::Block;
use crate::model::attention::AttnInputs;
use crate::model::tape::Tape;

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

    /// `block` over `xs` `[1, P, embed]`, attention within each window.
    pub(super) fn forward(
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
