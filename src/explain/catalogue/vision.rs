//! The vision tower's own attention as a map over the image regions (`attention.vision.*`):
//! per view, one row per layer and head (the class token's row under CLIP, the attention each
//! patch receives under SigLIP and Qwen VL, [`VisionRow`]), the layers and heads combined, then
//! placed on every region's cells. A session stores the rows per view with their placement (an
//! anyres stitched cell takes its tile patch, a pooled cell the bilinear mix; a LLaVA-style cell
//! its patch; a Qwen merged cell the mean of its 2×2 patches), the same placement as its vision
//! relevancy; an older LLaVA-1.5 file's full `attn.vit` matrices give one view whose patches
//! are the region's cells.

use std::borrow::Cow;

use super::compute::{set_values, tokens_label};
use super::{CatalogueError, Explanation, Layers};
use crate::explain::attention::HeadAgg;
use crate::session::{Array, Placement, Session, VisionAttention, VisionRow};

/// The rows `[Lv, Hv, P]` of every view, how they were read and where the cells take them
/// from.
struct Rows<'a> {
    views: Cow<'a, [Array]>,
    row: VisionRow,
    placement: Cow<'a, Placement>,
}

/// The session's vision attention as rows per view.
fn rows(s: &Session) -> Result<Rows<'_>, CatalogueError> {
    let cells = super::compute::cells(s)?.len();
    match s.attn_vit.as_ref() {
        None => Err(CatalogueError::NoVisionAttention),
        Some(VisionAttention::Views(v)) => Ok(Rows {
            views: Cow::Borrowed(&v.views),
            row: v.row,
            placement: Cow::Borrowed(&v.placement),
        }),
        Some(VisionAttention::Full(a)) => {
            let [layers, heads, n, m] = a.shape[..] else {
                return Err(CatalogueError::VisionCells(a.shape.clone(), cells));
            };
            // The class token, when there is one, is the token before the cells' patches.
            let row = match n.checked_sub(cells) {
                Some(1) => VisionRow::Class,
                Some(0) => VisionRow::Received,
                _ => return Err(CatalogueError::VisionCells(a.shape.clone(), cells)),
            };
            if m != n || cells == 0 {
                return Err(CatalogueError::VisionCells(a.shape.clone(), cells));
            }
            let mut data = Vec::with_capacity(layers * heads * cells);
            for m in a.data.chunks_exact(n * n) {
                data.extend(row.of_matrix(m, n, cells));
            }
            let view = Array::new(vec![layers, heads, cells], data)
                .ok_or_else(|| CatalogueError::VisionCells(a.shape.clone(), cells))?;
            let identity: Vec<Vec<(usize, f32)>> = (0..cells).map(|c| vec![(c, 1.0)]).collect();
            Ok(Rows {
                views: Cow::Owned(vec![view]),
                row,
                placement: Cow::Owned(Placement::from_cells(&identity)),
            })
        }
    }
}

/// One view's `[P]` row: the chosen layers (mean for [`Layers::Mean`]) of the heads combined.
fn combine(view: &Array, layers: &[usize], heads: HeadAgg) -> Vec<f32> {
    let (hv, p) = (view.shape[1], view.shape[2]);
    let mut out = vec![0f32; p];
    for &l in layers {
        let one: Vec<f32> = match heads {
            HeadAgg::Head(h) => view.row(&[l, h]).to_vec(),
            HeadAgg::Mean => (0..p)
                .map(|j| (0..hv).map(|h| view.get(&[l, h, j])).sum::<f32>() / hv as f32)
                .collect(),
            HeadAgg::Max => (0..p)
                .map(|j| {
                    (0..hv)
                        .map(|h| view.get(&[l, h, j]))
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect(),
        };
        for (o, v) in out.iter_mut().zip(one) {
            *o += v / layers.len() as f32;
        }
    }
    out
}

/// The map `attention.vision.{layers}.{heads}` (the same for every answer token).
pub(super) fn vision_map(
    s: &Session,
    tokens: &[usize],
    layers: Layers,
    heads: HeadAgg,
    mut out: Explanation,
) -> Result<Explanation, CatalogueError> {
    let r = rows(s)?;
    let first = r.views.first().ok_or(CatalogueError::NoVisionAttention)?;
    let (lv, hv) = (first.shape[0], first.shape[1]);
    let chosen: Vec<usize> = match layers {
        Layers::Last => vec![lv.saturating_sub(1)],
        Layers::Mean => (0..lv).collect(),
        Layers::At(l) if l < lv => vec![l],
        Layers::At(l) => return Err(CatalogueError::VisionLayer(l, lv)),
    };
    if let HeadAgg::Head(h) = heads {
        if h >= hv {
            return Err(CatalogueError::VisionHead(h, hv));
        }
    }
    let flat: Vec<f32> = r
        .views
        .iter()
        .flat_map(|v| combine(v, &chosen, heads))
        .collect();
    let values = r.placement.apply(|i| flat.get(i).copied().unwrap_or(0.0));
    set_values(&mut out, s, values);
    let layer = match layers {
        Layers::Mean => "mean of layers".to_string(),
        _ => format!("layer {}", chosen[0]),
    };
    let heads_text = match heads {
        HeadAgg::Head(h) => format!("head {h}"),
        HeadAgg::Mean => "mean of heads".into(),
        HeadAgg::Max => "max of heads".into(),
    };
    let row = match r.row {
        VisionRow::Class => "class-token row",
        VisionRow::Received => "attention received",
    };
    out.layer = (layers != Layers::Mean).then_some(chosen[0]);
    out.head = match heads {
        HeadAgg::Head(h) => Some(h),
        _ => None,
    };
    out.title = format!(
        "vision attention · {layer} · {heads_text} · {row} · {}",
        tokens_label(tokens)
    );
    Ok(out)
}
