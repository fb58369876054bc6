//! The results of a benchmark run: per-scene values, per-method aggregates, the JSON written by
//! `--json` and the table printed on stdout.

use std::fmt::Write as _;

use serde::Serialize;

use crate::explain::catalogue::MapId;
use crate::explain::faithfulness::curve_area;
use crate::session::RegionKind;

/// Settings of a run, recorded in the JSON so that numbers can be reproduced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parameters {
    /// The model as named on the command line (or the embedded demo).
    pub model: String,
    /// Scenes generated.
    pub scenes: usize,
    /// Dataset seed: scene i is `demo::generate(scene_seed(seed, i))`.
    pub seed: u64,
    /// Most tokens generated per answer.
    pub max_new_tokens: usize,
    /// `[rows, cols]` of the image patch grid.
    pub image_grid: [usize; 2],
    /// Patch counts of the deletion curves (k = 0 first).
    pub ks: Vec<usize>,
    /// The fraction of patches removed for `drop`.
    pub drop_fraction: f32,
    /// The image region scored (`highres` on LLaVA-NeXT / OneVision, `image` otherwise);
    /// `image_grid` is its grid.
    pub region: Option<RegionKind>,
    /// Every image region of the sessions, in input order, with its grid.
    pub regions: Vec<RegionGrid>,
}

/// One image region of a run's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RegionGrid {
    /// Which view it is.
    pub region: RegionKind,
    /// `[rows, cols]` of its cells.
    pub grid: [usize; 2],
}

/// A method's localisation on one image region of one scene.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RegionScore {
    /// The region.
    pub region: RegionKind,
    /// The map's highest cell of the region lies on the target object.
    pub pointing: bool,
    /// Share of the map's mass over the region that lies on the object.
    pub mass_in_mask: f32,
}

/// A method's localisation on one image region, over all scenes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RegionSummary {
    /// The region.
    pub region: RegionKind,
    /// Share of scenes where the pointing game hits on the region.
    pub pointing: f32,
    /// Mean mass in mask on the region.
    pub mass_in_mask: f32,
}

/// One method's numbers on one scene.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodScene {
    /// The map (`attention.last.mean`, ...; serialised as its catalogue spelling).
    pub method: MapId,
    /// The map's highest patch lies on the target object (pointing game).
    pub pointing: bool,
    /// Share of the map's mass on the object.
    pub mass_in_mask: f32,
    /// Probability of the first answer token with the map's top-k patches removed, per k.
    pub deletion: Vec<f32>,
    /// Normalised area under `deletion` (lower is more faithful).
    pub deletion_area: f32,
    /// p(original) − p(top `drop_fraction` removed).
    pub drop: f32,
    /// Pointing and mass in mask on every image region, when the session has several
    /// (LLaVA-NeXT / OneVision: base and high-res); absent otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionScore>,
}

/// Everything measured on one scene.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SceneResult {
    /// Index of the scene in the run.
    pub index: usize,
    /// The question asked.
    pub question: String,
    /// Its kind (`color`, `shape`, `exists`, `where`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The true answer.
    pub answer: String,
    /// What the model answered (special tokens left out, trimmed).
    pub output: String,
    /// Whether `output` equals `answer` (case and a final full stop ignored).
    pub correct: bool,
    /// Index of the target object in the scene.
    pub object: usize,
    /// Fraction of the image the target object covers.
    pub object_area: f32,
    /// Per-method numbers, in the order of [`MapId::STANDARD`], then the extra maps.
    pub methods: Vec<MethodScene>,
}

/// One method's numbers over all scenes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodSummary {
    /// The map (serialised as its catalogue spelling).
    pub method: MapId,
    /// Share of scenes where the pointing game hits.
    pub pointing: f32,
    /// Mean mass in mask.
    pub mass_in_mask: f32,
    /// Mean deletion curve (per k of the parameters).
    pub deletion: Vec<f32>,
    /// Normalised area under the mean deletion curve (lower is more faithful).
    pub deletion_area: f32,
    /// Mean probability drop at the parameters' `drop_fraction`.
    pub drop: f32,
    /// Pointing and mass in mask per image region, when the sessions have several; absent
    /// otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionSummary>,
}

/// Wall-clock seconds spent in each stage, over all scenes (not part of the JSON, so that two
/// runs with one seed write the same file).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Generating the answers (with full attention capture).
    pub generate: f64,
    /// Relevancy of the first answer token.
    pub relevancy: f64,
    /// Causal explanation of the first answer token.
    pub causal: f64,
    /// Deletion curves (model re-reads of modified images).
    pub deletion: f64,
    /// The whole run.
    pub total: f64,
    /// Modified images the model read for the deletion curves.
    pub deletion_images: usize,
}

/// The results of `lvlmscope eval`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// The settings.
    pub parameters: Parameters,
    /// Share of scenes whose answer was right.
    pub answer_accuracy: f32,
    /// Per-method aggregates, in the order of [`MapId::STANDARD`], then the extra maps.
    pub methods: Vec<MethodSummary>,
    /// Per-scene values.
    pub scenes: Vec<SceneResult>,
    /// Where the time went.
    #[serde(skip)]
    pub timings: Timings,
}

fn mean(values: impl Iterator<Item = f32>) -> f32 {
    let (sum, n) = values.fold((0f64, 0usize), |(s, n), v| (s + v as f64, n + 1));
    if n == 0 {
        0.0
    } else {
        (sum / n as f64) as f32
    }
}

fn scenes(n: usize) -> String {
    format!("{n} scene{}", if n == 1 { "" } else { "s" })
}

impl EvalReport {
    /// Builds the report from per-scene results, computing the aggregates.
    pub fn new(
        parameters: Parameters,
        methods: &[MapId],
        scenes: Vec<SceneResult>,
        timings: Timings,
    ) -> Self {
        let patches = parameters.image_grid[0] * parameters.image_grid[1];
        let summaries = methods
            .iter()
            .enumerate()
            .map(|(m, name)| {
                let of = || scenes.iter().filter_map(|s| s.methods.get(m));
                let deletion: Vec<f32> = (0..parameters.ks.len())
                    .map(|k| mean(of().filter_map(|r| r.deletion.get(k).copied())))
                    .collect();
                let kinds: Vec<RegionKind> = of()
                    .next()
                    .map(|r| r.regions.iter().map(|s| s.region).collect())
                    .unwrap_or_default();
                let regions = kinds
                    .iter()
                    .map(|&region| {
                        let on = || {
                            of().filter_map(move |r| r.regions.iter().find(|s| s.region == region))
                        };
                        RegionSummary {
                            region,
                            pointing: mean(on().map(|s| if s.pointing { 1.0 } else { 0.0 })),
                            mass_in_mask: mean(on().map(|s| s.mass_in_mask)),
                        }
                    })
                    .collect();
                MethodSummary {
                    method: *name,
                    regions,
                    pointing: mean(of().map(|r| if r.pointing { 1.0 } else { 0.0 })),
                    mass_in_mask: mean(of().map(|r| r.mass_in_mask)),
                    deletion_area: curve_area(&parameters.ks, &deletion, patches),
                    deletion,
                    drop: mean(of().map(|r| r.drop)),
                }
            })
            .collect();
        Self {
            answer_accuracy: mean(scenes.iter().map(|s| if s.correct { 1.0 } else { 0.0 })),
            parameters,
            methods: summaries,
            scenes,
            timings,
        }
    }

    /// The table printed on stdout: one row per method.
    pub fn table(&self) -> String {
        let p = &self.parameters;
        let correct = self.scenes.iter().filter(|s| s.correct).count();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} (seed {}), answer accuracy {:.2} ({correct}/{})",
            scenes(self.scenes.len()),
            p.seed,
            self.answer_accuracy,
            self.scenes.len()
        );
        let drop = format!("drop@{:.0}% ↑", p.drop_fraction * 100.0);
        let w = self.name_width();
        let _ = writeln!(
            out,
            "{:<w$} {:>10} {:>14} {:>14} {:>11}",
            "method", "pointing ↑", "mass in mask ↑", "deletion AUC ↓", drop
        );
        for m in &self.methods {
            let _ = writeln!(
                out,
                "{:<w$} {:>10.3} {:>14.3} {:>14.3} {:>11.3}",
                m.method.to_string(),
                m.pointing,
                m.mass_in_mask,
                m.deletion_area,
                m.drop
            );
        }
        if p.regions.len() > 1 {
            self.region_table(&mut out);
        }
        out
    }

    /// The lines a run over sessions of several image regions adds: which region the table
    /// scores, then pointing and mass in mask on every region.
    fn region_table(&self, out: &mut String) {
        let p = &self.parameters;
        let grid = |g: [usize; 2]| format!("{}x{}", g[0], g[1]);
        let _ = writeln!(
            out,
            "\nscored region: {} {} (pointing, mass in mask and deletion above); per region:",
            p.region.map_or("-", RegionKind::name),
            grid(p.image_grid)
        );
        let header: String = p
            .regions
            .iter()
            .map(|r| {
                format!(
                    " {:>24}",
                    format!("{} {} pointing / mass", r.region.name(), grid(r.grid))
                )
            })
            .collect();
        let w = self.name_width();
        let _ = writeln!(out, "{:<w$}{header}", "method");
        for m in &self.methods {
            let cells: String = m
                .regions
                .iter()
                .map(|r| {
                    format!(
                        " {:>24}",
                        format!("{:.3} / {:.3}", r.pointing, r.mass_in_mask)
                    )
                })
                .collect();
            let _ = writeln!(out, "{:<w$}{cells}", m.method.to_string());
        }
    }

    /// The width of the tables' method column: 22, or the longest method id (an extra map such
    /// as `attention.vision.last.mean`) and a space.
    fn name_width(&self) -> usize {
        let longest = self
            .methods
            .iter()
            .map(|m| m.method.to_string().chars().count());
        longest.map(|n| n + 1).fold(22, usize::max)
    }

    /// The one-line timing summary printed on stderr.
    pub fn timing_line(&self) -> String {
        let t = &self.timings;
        let n = self.scenes.len().max(1) as f64;
        format!(
            "{} in {:.1}s ({:.2}s per scene: generation {:.2}s, relevancy {:.2}s, \
             causal {:.2}s, deletion {:.2}s for {:.0} images)",
            scenes(self.scenes.len()),
            t.total,
            t.total / n,
            t.generate / n,
            t.relevancy / n,
            t.causal / n,
            t.deletion / n,
            t.deletion_images as f64 / n
        )
    }
}
