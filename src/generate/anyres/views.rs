//! Per-view maps of an anyres image placed on its regions' cells, written once for the vision
//! relevancy and the vision attention: a base cell is the base view's patch, a high-resolution
//! cell the tile patch it was stitched from through the same unpad (and OneVision's pooling:
//! the bilinear mix of its patches) as the image features ([`AnyresLayout::sources`]).

use crate::generate::vision_rows::kept_views;
use crate::model::AttentionRecorder;
use crate::processing::anyres::{AnyresLayout, FeatureSource};
use crate::session::{Placement, RegionKind, VisionInfo, VisionRow, VisionViews};

/// Where the cells of `kinds`' regions (in order) take their values from: indices into the
/// views' patch rows laid end to end (view · side² + patch), with weights.
pub fn placement(layout: &AnyresLayout, kinds: &[RegionKind]) -> Placement {
    let sources = layout.sources();
    let (base, grid) = sources.split_at(layout.rule.base.min(sources.len()));
    let mut cells = Vec::new();
    for kind in kinds {
        let part = match kind {
            RegionKind::Base => base,
            RegionKind::Highres => grid,
            RegionKind::Image => &[],
        };
        for s in part {
            if let FeatureSource::Cells(c) = s {
                cells.push(c.clone());
            }
        }
    }
    Placement::from_cells(&cells)
}

/// One per-view row (`[views][Pv]`, after a class token when `class_token`) placed on the
/// cells of `kinds`' regions, in order (see [`placement`]).
pub fn place(
    per_view: &[Vec<f32>],
    class_token: bool,
    layout: &AnyresLayout,
    kinds: &[RegionKind],
) -> Vec<f32> {
    let skip = usize::from(class_token);
    let pf = layout.rule.side * layout.rule.side;
    placement(layout, kinds).apply(|src| {
        per_view
            .get(src / pf)
            .and_then(|row| row.get(skip + src % pf))
            .copied()
            .unwrap_or(0.0)
    })
}

/// The per-view vision attention `recorder` kept ([`AttentionRecorder::keep_vision_rows`]),
/// placed on the base and high-resolution regions of `layout`, with the manifest's description;
/// `None` when nothing was kept or the rows are not one per view and patch.
pub fn vision_views(
    recorder: &AttentionRecorder,
    layout: &AnyresLayout,
    row: VisionRow,
) -> Option<(VisionInfo, VisionViews)> {
    let placement = placement(layout, &[RegionKind::Base, RegionKind::Highres]);
    let pf = layout.rule.side * layout.rule.side;
    kept_views(recorder, layout.views(), pf, row, placement)
}
