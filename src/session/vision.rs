//! The vision tower's attention a session stores (docs/design.md, "Session file"): one view's
//! full matrices (`attn.vit`, older LLaVA-1.5 files), or one row per layer and head for every
//! view (`attn.vit.v{K}`: an anyres run's base view and tiles, a LLaVA-style or Qwen VL run's
//! one view) and where each image-region cell takes its value from (`attn.vit.source`,
//! `attn.vit.weight`), described by the manifest's `vision_attention`.

use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::file::decode_float;
use super::Array;

/// How a view's row `[P]` is read from one head's attention matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VisionRow {
    /// The class token's query row over the patches (CLIP: its attention to each patch).
    Class,
    /// The attention each patch receives, averaged over every query (SigLIP, which has no
    /// class token: column means of the matrix; a row sums to 1).
    Received,
}

impl VisionRow {
    /// The row as the manifest and titles spell it.
    pub fn name(self) -> &'static str {
        match self {
            VisionRow::Class => "class",
            VisionRow::Received => "received",
        }
    }

    /// The row of one head's `[n, n]` matrix `m` (row-major) over its last `patches` tokens.
    pub fn of_matrix(self, m: &[f32], n: usize, patches: usize) -> Vec<f32> {
        let first = n.saturating_sub(patches);
        match self {
            VisionRow::Class => m[first..n].to_vec(),
            VisionRow::Received => (first..n)
                .map(|j| (0..n).map(|i| m[i * n + j]).sum::<f32>() / n as f32)
                .collect(),
        }
    }
}

/// The manifest's description of per-view vision attention (`vision_attention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisionInfo {
    /// How each view's rows were read from its matrices.
    pub row: VisionRow,
    /// Number of views: tensors `attn.vit.v0` … `attn.vit.v{views−1}`.
    pub views: usize,
}

/// Where each image-region cell (every region's cells in input order) takes its value from:
/// `taps` pairs of (index into the views' rows laid end to end, weight) a cell, summed. A
/// LLaVA-NeXT cell is one patch of one view with weight 1; a OneVision pooled cell the bilinear
/// mix of up to four.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Placement {
    /// Pairs per cell (unused pairs have weight 0).
    pub taps: usize,
    /// `[cells × taps]` indices (view · P + patch).
    pub source: Vec<usize>,
    /// `[cells × taps]` weights.
    pub weight: Vec<f32>,
}

impl Placement {
    /// The placement of `cells`, each a list of (index, weight) pairs.
    pub fn from_cells(cells: &[Vec<(usize, f32)>]) -> Self {
        let taps = cells.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut source = vec![0; cells.len() * taps];
        let mut weight = vec![0.0; cells.len() * taps];
        for (c, pairs) in cells.iter().enumerate() {
            for (k, &(s, w)) in pairs.iter().enumerate() {
                source[c * taps + k] = s;
                weight[c * taps + k] = w;
            }
        }
        Self {
            taps,
            source,
            weight,
        }
    }

    /// Number of cells.
    pub fn cells(&self) -> usize {
        self.source.len().checked_div(self.taps).unwrap_or(0)
    }

    /// The value of every cell from `value(index)`, the pairs summed in order (a pair of weight
    /// 0 adds nothing).
    pub fn apply(&self, value: impl Fn(usize) -> f32) -> Vec<f32> {
        let taps = self.taps.max(1);
        self.source
            .chunks(taps)
            .zip(self.weight.chunks(taps))
            .map(|(s, w)| {
                s.iter()
                    .zip(w)
                    .filter(|(_, &w)| w != 0.0)
                    .map(|(&s, &w)| w * value(s))
                    .sum()
            })
            .collect()
    }
}

/// Per-view vision attention (an anyres run's views, or the one view of any other run).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionViews {
    /// How the rows were read (the manifest's `vision_attention.row`).
    pub row: VisionRow,
    /// One `[Lv, Hv, P]` array per view (base view first, then the tiles row-major).
    pub views: Vec<Array>,
    /// Where each region cell takes its value from.
    pub placement: Placement,
}

/// The vision tower's attention a session holds.
#[derive(Debug, Clone, PartialEq)]
pub enum VisionAttention {
    /// `attn.vit` `[Lv, Hv, n, n]`: one view's full matrices (n = P + 1 with a class token).
    Full(Array),
    /// `attn.vit.v{K}` and their placement on the regions' cells.
    Views(VisionViews),
}

impl VisionAttention {
    /// Vision layers and heads held (`[Lv, Hv]`; `[0, 0]` for arrays of another rank).
    pub fn layers_heads(&self) -> (usize, usize) {
        let shape = match self {
            VisionAttention::Full(a) => &a.shape,
            VisionAttention::Views(v) => match v.views.first() {
                Some(a) => &a.shape,
                None => return (0, 0),
            },
        };
        match shape[..] {
            [l, h, ..] if shape.len() >= 3 => (l, h),
            _ => (0, 0),
        }
    }

    /// The full matrices, when that is what is held.
    pub fn full(&self) -> Option<&Array> {
        match self {
            VisionAttention::Full(a) => Some(a),
            VisionAttention::Views(_) => None,
        }
    }
}

/// Checks per-view vision attention against the session: equal `[Lv, Hv, P]` views with at
/// most `vision_layers` layers and `vision_heads` heads, one placed cell per region cell, every
/// index inside the views' rows and every weight finite.
pub(super) fn check_views(
    v: &VisionViews,
    vision_layers: usize,
    vision_heads: usize,
    cells: usize,
) -> Result<(), String> {
    let Some(first) = v.views.first() else {
        return Err("its manifest lists no view of vision attention".into());
    };
    let shape = &first.shape;
    if shape.len() != 3 || shape[0] == 0 || shape[0] > vision_layers || shape[1] != vision_heads {
        return Err(format!(
            "attn.vit.v0 has shape {shape:?}, expected [layers ≤ {vision_layers}, {vision_heads}, patches]"
        ));
    }
    if let Some(k) = v.views.iter().position(|a| &a.shape != shape) {
        return Err(format!(
            "attn.vit.v{k} has shape {:?}, unlike attn.vit.v0's {shape:?}",
            v.views[k].shape
        ));
    }
    let p = &v.placement;
    if p.taps == 0 || p.source.len() != p.weight.len() || p.cells() != cells {
        return Err(format!(
            "attn.vit.source places {} cells, but the image regions have {cells}",
            p.cells()
        ));
    }
    let rows = v.views.len() * shape[2];
    if let Some(&bad) = p.source.iter().find(|&&i| i >= rows) {
        return Err(format!(
            "attn.vit.source names row {bad}, but the views hold {rows}"
        ));
    }
    if p.weight.iter().any(|w| !w.is_finite()) {
        return Err("attn.vit.weight holds a value that is not finite".into());
    }
    Ok(())
}

/// The vision attention of a file: `attn.vit`, or the per-view tensors its manifest's
/// `vision_attention` describes (their sizes are checked in [`validate`]); per-view tensors
/// the manifest does not describe, or both kinds at once, are refused.
pub(super) fn read_vision(
    st: &SafeTensors<'_>,
    info: &Option<VisionInfo>,
) -> Result<Option<VisionAttention>, String> {
    let names = st.names();
    let full = match st.tensor("attn.vit") {
        Ok(view) => Some(decode_float(&view).map_err(|r| format!("tensor attn.vit: {r}"))?),
        Err(_) => None,
    };
    let listed = names.iter().filter(|n| n.starts_with("attn.vit.")).count();
    let Some(info) = info else {
        return match names.iter().find(|n| n.starts_with("attn.vit.")) {
            Some(name) => Err(format!(
                "tensor {name} is per-view vision attention its manifest does not describe"
            )),
            None => Ok(full.map(VisionAttention::Full)),
        };
    };
    if full.is_some() {
        return Err("it holds attn.vit and per-view vision attention at once".into());
    }
    // Every view, the sources and the weights are tensors of the file: a count beyond them
    // is refused before it sizes anything.
    if info.views == 0 || info.views + 2 != listed {
        return Err(format!(
            "its manifest claims {} views of vision attention, but the file holds {} attn.vit.* \
             tensors (a view each, then attn.vit.source and attn.vit.weight)",
            info.views, listed
        ));
    }
    let tensor = |name: &str| {
        st.tensor(name)
            .map_err(|_| format!("tensor {name} is missing"))
    };
    let mut views = Vec::with_capacity(info.views);
    for k in 0..info.views {
        let name = format!("attn.vit.v{k}");
        views.push(decode_float(&tensor(&name)?).map_err(|r| format!("tensor {name}: {r}"))?);
    }
    let source = tensor("attn.vit.source")?;
    if source.dtype() != Dtype::I64 || source.shape().len() != 2 {
        return Err("tensor attn.vit.source must be a 2-D I64 tensor".into());
    }
    let weight = decode_float(&tensor("attn.vit.weight")?)
        .map_err(|r| format!("tensor attn.vit.weight: {r}"))?;
    if weight.shape != source.shape() {
        return Err(format!(
            "attn.vit.weight has shape {:?}, unlike attn.vit.source's {:?}",
            weight.shape,
            source.shape()
        ));
    }
    let source = source
        .data()
        .chunks_exact(8)
        .map(|c| {
            usize::try_from(i64::from_le_bytes(c.try_into().expect("chunk of 8")))
                .map_err(|_| "attn.vit.source holds a negative index".to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(VisionAttention::Views(VisionViews {
        row: info.row,
        views,
        placement: Placement {
            taps: weight.shape[1],
            source,
            weight: weight.data,
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_a_matrix() {
        // 3 tokens: a class token and two patches.
        let m = [0.5, 0.2, 0.3, 0.1, 0.6, 0.3, 0.4, 0.4, 0.2];
        assert_eq!(VisionRow::Class.of_matrix(&m, 3, 2), vec![0.2, 0.3]);
        // 2 tokens, no class token: the column means of [[0.5, 0.2], [0.3, 0.1]].
        let got = VisionRow::Received.of_matrix(&m[..4], 2, 2);
        assert!((got[0] - 0.4).abs() < 1e-6 && (got[1] - 0.15).abs() < 1e-6);
    }

    #[test]
    fn placement_sums_its_pairs() {
        let p = Placement::from_cells(&[vec![(2, 1.0)], vec![(0, 0.25), (1, 0.75)]]);
        assert_eq!((p.taps, p.cells()), (2, 2));
        let rows = [10.0, 20.0, 30.0];
        assert_eq!(p.apply(|i| rows[i]), vec![30.0, 17.5]);
    }
}
