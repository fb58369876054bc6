//! The vision tower's attention a run keeps (docs/design.md, "Session file"): one row per layer
//! and head of every view the tower ran, reduced on the device by the recorder
//! ([`AttentionRecorder::keep_vision_rows`]), with where each image-region cell takes its value
//! from. Written once for every pipeline: a LLaVA-style image is one view whose patches are the
//! region's cells, a Qwen VL image one view whose merged cells each take the mean of their
//! patches, an anyres image a base view and tiles placed through the feature packing.

use super::Decoding;
use crate::model::{AttentionRecorder, VisionRowKind};
use crate::session::{Array, Placement, VisionInfo, VisionRow, VisionViews};

/// The row the session keeps of a tower with or without a class token.
pub fn vision_row(class_token: bool) -> VisionRow {
    if class_token {
        VisionRow::Class
    } else {
        VisionRow::Received
    }
}

/// Makes `run`'s recorder also keep the tower's rows as `row` reads them, unless it records
/// nothing at all.
pub fn keep_rows(run: &mut Decoding, row: VisionRow) {
    if run.recorder.mode().is_off() {
        return;
    }
    let kind = match row {
        VisionRow::Class => VisionRowKind::Class,
        VisionRow::Received => VisionRowKind::Received,
    };
    let recorder = std::mem::replace(&mut run.recorder, AttentionRecorder::off());
    run.recorder = recorder.keep_vision_rows(kind);
}

/// The rows `recorder` kept, `views` views of `patches` patches each, with the manifest's
/// description and `placement`; `None` when nothing was kept or the rows are not one per view
/// and patch.
pub fn kept_views(
    recorder: &AttentionRecorder,
    views: usize,
    patches: usize,
    row: VisionRow,
    placement: Placement,
) -> Option<(VisionInfo, VisionViews)> {
    let rows = recorder.view_rows()?;
    if rows.len() != views || rows.iter().any(|(shape, _)| shape[2] != patches) {
        return None;
    }
    let views = rows
        .into_iter()
        .map(|(shape, data)| Array::new(shape, data))
        .collect::<Option<Vec<_>>>()?;
    let info = VisionInfo {
        row,
        views: views.len(),
    };
    Some((
        info,
        VisionViews {
            row,
            views,
            placement,
        },
    ))
}

/// Each of `cells` cells takes the mean of `group` consecutive patches (1: its own patch).
pub fn grouped_placement(cells: usize, group: usize) -> Placement {
    let group = group.max(1);
    let w = 1.0 / group as f32;
    let cells: Vec<Vec<(usize, f32)>> = (0..cells)
        .map(|c| (0..group).map(|k| (c * group + k, w)).collect())
        .collect();
    Placement::from_cells(&cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_four_average_their_patches() {
        let p = grouped_placement(2, 4);
        assert_eq!((p.taps, p.cells()), (4, 2));
        let rows: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(p.apply(|i| rows[i]), vec![1.5, 5.5]);
        assert_eq!(
            grouped_placement(3, 1).apply(|i| rows[i]),
            vec![0.0, 1.0, 2.0]
        );
    }
}
