//! `lvlmscope eval --heads`: localization heads. Over the scenes of [`super::evaluate`] (same
//! seeds, same questions), every (layer, head) of the decoder is scored by the pointing game
//! and the mass in the target object's mask of its attention map for the first answer token
//! (the catalogue's `attention.l{l}.h{h}`), by the looser overlap pointing (top patch ≥ ¼
//! covered) and by Zhang et al.'s pointing game with its 15-pixel tolerance scaled to the
//! scene ([`metrics::pointing_tolerance`], [`metrics::zhang_tolerance`]). The best heads become the catalogue map
//! `attention.heads.best` ([`crate::explain::catalogue::heads`]).

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use super::scenes::{self, for_each_scene};
use super::{metrics, EvalError, EvalOptions};
use crate::explain::attention::HeadAgg;
use crate::explain::catalogue::heads::{best_of, ranked, HeadScore};
use crate::explain::catalogue::{self, MapId};
use crate::generate::Capture;
use crate::job::SessionModel;
use crate::session::RegionKind;

/// How many heads the text and the JSON list as the top.
pub const TOP: usize = 10;

/// The settings of a heads run, recorded in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadsParameters {
    /// The model as named on the command line.
    pub model: String,
    /// Scenes generated.
    pub scenes: usize,
    /// Dataset seed.
    pub seed: u64,
    /// Scenes with a question about an object (the ones scored).
    pub scored: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// The pointing tolerance in pixels of the scene: Zhang et al.'s 15 px at a 500-px long
    /// side, carried to the scene's long side.
    pub tolerance_px: f64,
    /// The image region the heads' maps are scored on (`highres` on LLaVA-NeXT / OneVision by
    /// default, `image` otherwise).
    pub region: Option<RegionKind>,
    /// `[rows, cols]` of that region's cells.
    pub grid: [usize; 2],
}

/// The results of `eval --heads` (also the score file `attention.heads.best` reads).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadsReport {
    /// The settings.
    pub parameters: HeadsParameters,
    /// Every head's scores, layer-major.
    pub heads: Vec<HeadScore>,
    /// The [`TOP`] best heads, best first.
    pub top: Vec<HeadScore>,
    /// Pointing score per layer (rows) and head (columns).
    pub pointing_grid: Vec<Vec<f32>>,
    /// Mass in mask per layer and head.
    pub mass_grid: Vec<Vec<f32>>,
    /// Overlap pointing per layer and head.
    pub overlap_grid: Vec<Vec<f32>>,
    /// Pointing with Zhang et al.'s tolerance per layer and head.
    pub tolerance_grid: Vec<Vec<f32>>,
    /// The catalogue map of the best heads (`attention.heads.l2h1`).
    pub best: Option<MapId>,
    /// The same scores per question kind (colour, shape, exists, where).
    pub kinds: Vec<KindScores>,
}

/// The head scores over the scenes of one question kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindScores {
    /// The kind (`color`, `shape`, `exists`, `where`).
    pub kind: String,
    /// Scenes of that kind.
    pub scenes: usize,
    /// The best head on them.
    pub best: HeadScore,
    /// Pointing score per layer and head.
    pub pointing_grid: Vec<Vec<f32>>,
    /// Overlap pointing per layer and head.
    pub overlap_grid: Vec<Vec<f32>>,
    /// Pointing with Zhang et al.'s tolerance per layer and head.
    pub tolerance_grid: Vec<Vec<f32>>,
}

/// Hits and mass per head over some scenes.
#[derive(Debug, Clone, Default)]
struct Tally {
    scenes: usize,
    hits: Vec<usize>,
    overlap: Vec<usize>,
    tolerance: Vec<usize>,
    mass: Vec<f64>,
}

impl Tally {
    fn new(n: usize) -> Self {
        Self {
            scenes: 0,
            hits: vec![0; n],
            overlap: vec![0; n],
            tolerance: vec![0; n],
            mass: vec![0.0; n],
        }
    }

    fn scores(&self, heads: usize) -> Vec<HeadScore> {
        let n = self.scenes.max(1) as f64;
        (0..self.hits.len())
            .map(|i| HeadScore {
                layer: i / heads.max(1),
                head: i % heads.max(1),
                pointing: (self.hits[i] as f64 / n) as f32,
                mass_in_mask: (self.mass[i] / n) as f32,
                pointing_overlap: (self.overlap[i] as f64 / n) as f32,
                pointing_tolerance: (self.tolerance[i] as f64 / n) as f32,
            })
            .collect()
    }
}

fn grid(scores: &[HeadScore], heads: usize, f: fn(&HeadScore) -> f32) -> Vec<Vec<f32>> {
    scores
        .chunks(heads.max(1))
        .map(|row| row.iter().map(f).collect())
        .collect()
}

/// Scores every decoder head on the scenes `options` describe (the same scenes and questions
/// as [`super::evaluate`]), on the image region the run scores ([`super::scenes::scored`]: the
/// high-resolution grid of a LLaVA-NeXT / OneVision model unless `options.region` names
/// another, the one region otherwise). `on_scene(done, total)` is called after each scene.
pub fn evaluate_heads(
    model: &SessionModel,
    options: &EvalOptions,
    cancel: &AtomicBool,
    on_scene: &mut dyn FnMut(usize, usize),
) -> Result<HeadsReport, EvalError> {
    let (layers, heads) = model.decoder_shape();
    let mut all = Tally::new(layers * heads);
    let mut by_kind: Vec<(String, Tally)> = Vec::new();
    let mut tolerance_px = 0.0;
    let mut region = None;
    for_each_scene(options, options.scenes, cancel, on_scene, |eval| {
        let session = eval.generate(model, 1, Capture::Rows, cancel)?;
        let scored = scenes::scored(&session, options.region)?;
        let mask = eval.mask();
        let coverage = scenes::coverage(&session, mask);
        let coverage = &coverage[scored.cells.clone()];
        let original = session.manifest.image.original_size;
        tolerance_px = metrics::zhang_tolerance(mask.width().max(mask.height()));
        let kind = eval.question.kind.name().to_string();
        if !by_kind.iter().any(|(k, _)| *k == kind) {
            by_kind.push((kind.clone(), Tally::new(layers * heads)));
        }
        let Some((_, tally)) = by_kind.iter_mut().find(|(k, _)| *k == kind) else {
            return Ok(());
        };
        for l in 0..layers {
            for h in 0..heads {
                let id = MapId::attention(l, layers, HeadAgg::Head(h));
                let map = catalogue::explain(&session, &[0], &id)
                    .map_err(|source| EvalError::Map {
                        scene: eval.index,
                        source,
                    })?
                    .cells();
                let map = &map[scored.cells.clone()];
                let hit = metrics::pointing_hit(map, coverage) as usize;
                let mass = metrics::mass_in_mask(map, coverage) as f64;
                let overlap = metrics::pointing_overlap(map, coverage) as usize;
                let near = metrics::pointing_tolerance_in(
                    map,
                    mask,
                    &scored.region,
                    original,
                    tolerance_px,
                ) as usize;
                for t in [&mut all, &mut *tally] {
                    t.hits[l * heads + h] += hit;
                    t.overlap[l * heads + h] += overlap;
                    t.tolerance[l * heads + h] += near;
                    t.mass[l * heads + h] += mass;
                }
            }
        }
        all.scenes += 1;
        tally.scenes += 1;
        region.get_or_insert((scored.region.kind, scored.region.grid));
        Ok(())
    })?;
    let scored = all.scenes;
    let scores = all.scores(heads);
    let kinds = by_kind
        .iter()
        .filter_map(|(kind, t)| {
            let scores = t.scores(heads);
            Some(KindScores {
                kind: kind.clone(),
                scenes: t.scenes,
                best: *ranked(&scores).first()?,
                pointing_grid: grid(&scores, heads, |s| s.pointing),
                overlap_grid: grid(&scores, heads, |s| s.pointing_overlap),
                tolerance_grid: grid(&scores, heads, |s| s.pointing_tolerance),
            })
        })
        .collect();
    Ok(HeadsReport {
        parameters: HeadsParameters {
            model: options.model_label.clone(),
            scenes: options.scenes,
            seed: options.seed,
            scored,
            layers,
            heads,
            tolerance_px,
            region: region.map(|(kind, _)| kind),
            grid: region.map_or([0, 0], |(_, grid)| grid),
        },
        top: ranked(&scores).into_iter().take(TOP).collect(),
        pointing_grid: grid(&scores, heads, |s| s.pointing),
        mass_grid: grid(&scores, heads, |s| s.mass_in_mask),
        overlap_grid: grid(&scores, heads, |s| s.pointing_overlap),
        tolerance_grid: grid(&scores, heads, |s| s.pointing_tolerance),
        kinds,
        best: (scored > 0)
            .then(|| best_of(&scores))
            .flatten()
            .map(|set| MapId::Heads(catalogue::HeadSel::Set(set))),
        heads: scores,
    })
}

impl HeadsReport {
    /// The text printed on stdout: the top heads, then the layer × head grids.
    pub fn table(&self) -> String {
        let p = &self.parameters;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} heads ({} layers × {}) on {} scenes with a target (seed {})",
            p.layers * p.heads,
            p.layers,
            p.heads,
            p.scored,
            p.seed
        );
        if let Some(region) = p.region.filter(|&r| r != RegionKind::Image) {
            let _ = writeln!(
                out,
                "scored on the {} region's {}x{} grid",
                region.name(),
                p.grid[0],
                p.grid[1]
            );
        }
        let _ = writeln!(
            out,
            "pointing: top patch on the object (≥ ½ covered, or its best-covered patch); \
             overlap: top patch ≥ ¼ covered; ±15 px: Zhang et al.'s game, the top patch's \
             centre within 15 px at a 500-px image of the object (here {:.2} px)",
            p.tolerance_px
        );
        let best = |f: fn(&HeadScore) -> f32| {
            self.heads
                .iter()
                .max_by(|a, b| {
                    f(a).total_cmp(&f(b))
                        .then((b.layer, b.head).cmp(&(a.layer, a.head)))
                })
                .map(|s| format!("l{}h{} {:.3}", s.layer, s.head, f(s)))
                .unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "best head by each: pointing {} · overlap {} · ±15 px {}",
            best(|s| s.pointing),
            best(|s| s.pointing_overlap),
            best(|s| s.pointing_tolerance)
        );
        let _ = writeln!(out, "top {} heads:", self.top.len());
        let _ = writeln!(
            out,
            "{:>4} {:>6} {:>5} {:>10} {:>14} {:>11} {:>11}",
            "rank", "layer", "head", "pointing ↑", "mass in mask ↑", "overlap ↑", "±15 px ↑"
        );
        for (i, s) in self.top.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:>4} {:>6} {:>5} {:>10.3} {:>14.3} {:>11.3} {:>11.3}",
                i + 1,
                s.layer,
                s.head,
                s.pointing,
                s.mass_in_mask,
                s.pointing_overlap,
                s.pointing_tolerance
            );
        }
        for (title, grid) in [
            ("pointing", &self.pointing_grid),
            ("mass in mask", &self.mass_grid),
            (
                "overlap pointing (top patch ≥ 25 % object)",
                &self.overlap_grid,
            ),
            (
                "pointing game of Zhang et al. (maximum within 15 px at 500 px)",
                &self.tolerance_grid,
            ),
        ] {
            let _ = writeln!(out, "\n{title} (layer × head):");
            let header: String = (0..p.heads)
                .map(|h| format!(" {:>6}", format!("h{h}")))
                .collect();
            let _ = writeln!(out, "{:>5}{header}", "");
            for (l, row) in grid.iter().enumerate() {
                let cells: String = row.iter().map(|v| format!(" {v:>6.3}")).collect();
                let _ = writeln!(out, "{:>5}{cells}", format!("l{l}"));
            }
        }
        let _ = writeln!(out, "\nbest head per question kind:");
        for k in &self.kinds {
            let _ = writeln!(
                out,
                "{:>8} ({:>3} scenes): l{}h{} pointing {:.3}, mass in mask {:.3}, overlap {:.3}, ±15 px {:.3}",
                k.kind,
                k.scenes,
                k.best.layer,
                k.best.head,
                k.best.pointing,
                k.best.mass_in_mask,
                k.best.pointing_overlap,
                k.best.pointing_tolerance
            );
        }
        if let Some(best) = &self.best {
            let _ = writeln!(out, "\nbest heads map: {best}");
        }
        out
    }
}
