//! Raw-attention views of a session (LVLM-Interpret's "Attentions" and "Attention analysis"
//! tabs, and more): pure functions of a [`Session`]'s `attn.gen`, no terminal code.
//!
//! Conventions: `t` is an output-token index, `l` a decoder layer, `h` a head; a *patch* is an
//! index into the image grid (row-major), and its input position is `patch_positions().start +
//! patch`. When the image span holds one more feature than the grid (a CLS feature first), the
//! first feature is skipped by the image maps and counted by the image share.

use std::ops::Range;

use crate::session::{Array, ImageRegion, Session};

mod aggregates;
mod words;

pub use aggregates::TokenAggregates;
pub use words::{prompt_words, word_attention, Word};

/// Why an attention view cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttentionError {
    /// The session has no `attn.gen` tensor.
    #[error("this session holds no recorded attention (attn.gen); run with attention capture on")]
    NoAttention,
    /// An output token index past the answer.
    #[error("output token {0} does not exist (the answer has {1} tokens)")]
    Token(usize, usize),
    /// A layer index past the model.
    #[error("layer {0} does not exist (the model has {1} layers)")]
    Layer(usize, usize),
    /// A head index past the model.
    #[error("head {0} does not exist (the model has {1} heads)")]
    Head(usize, usize),
    /// A patch index past the grid.
    #[error("patch {0} does not exist (the grid has {1} patches)")]
    Patch(usize, usize),
    /// The image span does not fit the grid.
    #[error("the image span holds {0} positions, which does not fit the {1}x{2} patch grid")]
    Grid(usize, usize, usize),
    /// No output token was selected.
    #[error("no output token is selected")]
    NoTokens,
}

/// How the heads of one layer are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadAgg {
    /// One head.
    Head(usize),
    /// Mean over heads.
    Mean,
    /// Element-wise maximum over heads.
    Max,
}

/// Input regions an answer token may attend to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The image patches.
    Image,
    /// The question: input positions after the image span.
    Question,
}

/// A map over the image patch grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Patch rows.
    pub rows: usize,
    /// Patch columns.
    pub cols: usize,
    /// Row-major values, `rows * cols` of them.
    pub values: Vec<f32>,
}

impl Grid {
    /// The value at patch row `r`, column `c`.
    pub fn get(&self, r: usize, c: usize) -> f32 {
        self.values[r * self.cols + c]
    }

    /// The smallest and largest value (0, 0 for an empty grid).
    pub fn min_max(&self) -> (f32, f32) {
        min_max(&self.values)
    }

    /// Mean of all values.
    pub fn mean(&self) -> f32 {
        mean(&self.values)
    }
}

/// The smallest and largest finite value of a slice ((0, 0) when none).
pub fn min_max(v: &[f32]) -> (f32, f32) {
    let mut it = v.iter().copied().filter(|x| x.is_finite());
    match it.next() {
        None => (0.0, 0.0),
        Some(first) => it.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x))),
    }
}

fn mean(v: &[f32]) -> f32 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f32>() / v.len() as f32
    }
}

/// The session's `attn.gen`, or [`AttentionError::NoAttention`].
pub fn attn_gen(s: &Session) -> Result<&Array, AttentionError> {
    s.attn_gen.as_ref().ok_or(AttentionError::NoAttention)
}

/// Input positions of the grid's patches (the image span without a leading CLS feature).
pub fn patch_positions(s: &Session) -> Result<Range<usize>, AttentionError> {
    let [rows, cols] = s.manifest.model.image_grid;
    let span = s.image_range();
    let p = rows * cols;
    if span.len() == p {
        Ok(span)
    } else if span.len() == p + 1 {
        Ok(span.start + 1..span.end)
    } else {
        Err(AttentionError::Grid(span.len(), rows, cols))
    }
}

/// Input positions of the question: after the image span, up to the last input position; in
/// a conversation's later turn, from where this turn's question starts (the earlier turns are
/// not its question).
pub fn question_range(s: &Session) -> Range<usize> {
    let start = s.current_turn().map_or(0, |t| t.question_start);
    s.image_range().end.max(start)..s.num_input()
}

fn check(s: &Session, t: usize, l: usize) -> Result<&Array, AttentionError> {
    let a = attn_gen(s)?;
    let (tn, ln) = (a.shape[0], a.shape[1]);
    if t >= tn {
        return Err(AttentionError::Token(t, tn));
    }
    if l >= ln {
        return Err(AttentionError::Layer(l, ln));
    }
    Ok(a)
}

/// The attention row of output token `t`, layer `l`, head `h` over all S positions.
pub fn attention_row(s: &Session, t: usize, l: usize, h: usize) -> Result<&[f32], AttentionError> {
    let a = check(s, t, l)?;
    if h >= a.shape[2] {
        return Err(AttentionError::Head(h, a.shape[2]));
    }
    Ok(a.row(&[t, l, h]))
}

/// The row of token `t` at layer `l` with heads combined by `agg`, over all S positions.
pub fn combined_row(
    s: &Session,
    t: usize,
    l: usize,
    agg: HeadAgg,
) -> Result<Vec<f32>, AttentionError> {
    let a = check(s, t, l)?;
    let heads = a.shape[2];
    match agg {
        HeadAgg::Head(h) => attention_row(s, t, l, h).map(<[f32]>::to_vec),
        HeadAgg::Mean => {
            let mut out = vec![0.0; a.shape[3]];
            for h in 0..heads {
                for (o, v) in out.iter_mut().zip(a.row(&[t, l, h])) {
                    *o += v;
                }
            }
            out.iter_mut().for_each(|o| *o /= heads as f32);
            Ok(out)
        }
        HeadAgg::Max => {
            let mut out = vec![f32::MIN; a.shape[3]];
            for h in 0..heads {
                for (o, v) in out.iter_mut().zip(a.row(&[t, l, h])) {
                    *o = o.max(*v);
                }
            }
            Ok(out)
        }
    }
}

/// The image map of token `t`, layer `l`, heads combined by `agg`.
pub fn image_map(s: &Session, t: usize, l: usize, agg: HeadAgg) -> Result<Grid, AttentionError> {
    tokens_image_map(s, &[t], l, agg)
}

/// The image map averaged over several output tokens (each token's map combined by `agg` first).
pub fn tokens_image_map(
    s: &Session,
    tokens: &[usize],
    l: usize,
    agg: HeadAgg,
) -> Result<Grid, AttentionError> {
    if tokens.is_empty() {
        return Err(AttentionError::NoTokens);
    }
    let span = patch_positions(s)?;
    let [rows, cols] = s.manifest.model.image_grid;
    let mut values = vec![0.0; rows * cols];
    for &t in tokens {
        let row = combined_row(s, t, l, agg)?;
        for (o, v) in values.iter_mut().zip(&row[span.clone()]) {
            *o += v / tokens.len() as f32;
        }
    }
    Ok(Grid { rows, cols, values })
}

/// The map over one image region's cells (`region`'s grid, row-major, separators skipped) of
/// layer `l`, heads combined by `agg`, averaged over `tokens`.
pub fn tokens_region_map(
    s: &Session,
    tokens: &[usize],
    l: usize,
    agg: HeadAgg,
    region: &ImageRegion,
) -> Result<Grid, AttentionError> {
    if tokens.is_empty() {
        return Err(AttentionError::NoTokens);
    }
    let cells = region.cell_positions();
    let mut values = vec![0.0; cells.len()];
    for &t in tokens {
        let row = combined_row(s, t, l, agg)?;
        if let Some(&p) = cells.iter().find(|&&p| p >= row.len()) {
            return Err(AttentionError::Patch(p, row.len()));
        }
        for (o, &p) in values.iter_mut().zip(&cells) {
            *o += row[p] / tokens.len() as f32;
        }
    }
    Ok(Grid {
        rows: region.grid[0],
        cols: region.grid[1],
        values,
    })
}

/// [`heads_by_image_attention`] over one image region: every head's map of the region's cells
/// at layer `l`, averaged over `tokens`, with its mean, highest mean first.
pub fn heads_by_region_attention(
    s: &Session,
    tokens: &[usize],
    l: usize,
    region: &ImageRegion,
) -> Result<Vec<(usize, f32, Grid)>, AttentionError> {
    let heads = s.manifest.model.text_heads;
    let mut out = (0..heads)
        .map(|h| {
            let g = tokens_region_map(s, tokens, l, HeadAgg::Head(h), region)?;
            Ok((h, g.mean(), g))
        })
        .collect::<Result<Vec<_>, AttentionError>>()?;
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(out)
}

/// Every head's image map of layer `l`, averaged over `tokens`, with its mean, sorted by mean
/// image attention, highest first (LVLM-Interpret's small multiples).
pub fn heads_by_image_attention(
    s: &Session,
    tokens: &[usize],
    l: usize,
) -> Result<Vec<(usize, f32, Grid)>, AttentionError> {
    let heads = s.manifest.model.text_heads;
    let mut out = (0..heads)
        .map(|h| {
            let g = tokens_image_map(s, tokens, l, HeadAgg::Head(h))?;
            Ok((h, g.mean(), g))
        })
        .collect::<Result<Vec<_>, AttentionError>>()?;
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(out)
}

/// Mean attention of token `t`, layer `l`, head `h` over the keys of `region`.
pub fn region_mean(
    s: &Session,
    t: usize,
    l: usize,
    h: usize,
    region: Region,
) -> Result<f32, AttentionError> {
    let row = attention_row(s, t, l, h)?;
    let keys = match region {
        Region::Image => patch_positions(s)?,
        Region::Question => question_range(s),
    };
    Ok(mean(&row[keys]))
}

/// The heads × layers grid (`[L, H]`) of mean attention from `tokens` to `region`, averaged over
/// the tokens: "Image-to-Answer" for [`Region::Image`], "Question-to-Answer" for
/// [`Region::Question`]. Computed directly; [`TokenAggregates`] gives the same from a cache.
pub fn heads_layers_grid(
    s: &Session,
    tokens: &[usize],
    region: Region,
) -> Result<Array, AttentionError> {
    if tokens.is_empty() {
        return Err(AttentionError::NoTokens);
    }
    let (layers, heads) = (s.manifest.model.text_layers, s.manifest.model.text_heads);
    let mut out = Array::zeros(&[layers, heads]);
    for l in 0..layers {
        for h in 0..heads {
            let mut acc = 0.0;
            for &t in tokens {
                acc += region_mean(s, t, l, h, region)?;
            }
            out.data[l * heads + h] = acc / tokens.len() as f32;
        }
    }
    Ok(out)
}

/// The reverse view: for each output token, the summed attention (layer `l`, heads combined by
/// `agg`) it gives to the selected `patches`.
pub fn patch_attention(
    s: &Session,
    patches: &[usize],
    l: usize,
    agg: HeadAgg,
) -> Result<Vec<f32>, AttentionError> {
    let positions = positions_of_patches(s, patches)?;
    position_attention(s, &positions, l, agg)
}

/// Input positions of patches: indices into the cells of every image region, region by region
/// (`Session::cell_positions`; for one region, its grid row-major).
pub fn positions_of_patches(s: &Session, patches: &[usize]) -> Result<Vec<usize>, AttentionError> {
    let cells = s.cell_positions();
    if cells.is_empty() {
        patch_positions(s)?;
    }
    if let Some(&p) = patches.iter().find(|&&p| p >= cells.len()) {
        return Err(AttentionError::Patch(p, cells.len()));
    }
    Ok(patches.iter().map(|&p| cells[p]).collect())
}

/// For each output token, the summed attention (layer `l`, heads by `agg`) to `positions`.
pub fn position_attention(
    s: &Session,
    positions: &[usize],
    l: usize,
    agg: HeadAgg,
) -> Result<Vec<f32>, AttentionError> {
    let a = attn_gen(s)?;
    if let Some(&p) = positions.iter().find(|&&p| p >= a.shape[3]) {
        return Err(AttentionError::Patch(p, a.shape[3]));
    }
    (0..s.num_output())
        .map(|t| {
            let row = combined_row(s, t, l, agg)?;
            Ok(positions.iter().map(|&p| row[p]).sum())
        })
        .collect()
}

/// For the selected `patches`: per head of layer `l`, the summed attention to them, averaged over
/// all output tokens.
pub fn patch_head_means(
    s: &Session,
    patches: &[usize],
    l: usize,
) -> Result<Vec<f32>, AttentionError> {
    let positions = positions_of_patches(s, patches)?;
    let t_len = s.num_output();
    (0..s.manifest.model.text_heads)
        .map(|h| {
            let mut acc = 0.0;
            for t in 0..t_len {
                let row = attention_row(s, t, l, h)?;
                acc += positions.iter().map(|&p| row[p]).sum::<f32>();
            }
            Ok(acc / t_len.max(1) as f32)
        })
        .collect()
}

/// The share of attention that output token `t` gives to the image span (CLS included), at layer
/// `l` averaged over heads, or over all layers and heads when `l` is `None`.
pub fn image_share(s: &Session, t: usize, l: Option<usize>) -> Result<f32, AttentionError> {
    let a = check(s, t, l.unwrap_or(0))?;
    let layers: Vec<usize> = match l {
        Some(l) => vec![l],
        None => (0..a.shape[1]).collect(),
    };
    let span = s.image_range();
    let mut acc = 0.0;
    for &l in &layers {
        for h in 0..a.shape[2] {
            acc += a.row(&[t, l, h])[span.clone()].iter().sum::<f32>();
        }
    }
    Ok(acc / (layers.len() * a.shape[2]) as f32)
}

#[cfg(test)]
mod tests;
