//! The explanation-quality benchmark behind `lvlmscope eval`.
//!
//! Over N synthetic scenes (`demo::generate(scene_seed(seed, i))`, each with exact object
//! masks) it asks one question per scene about one object, runs the model greedily with full
//! attention capture, and for the FIRST answer token computes every standard map of the
//! catalogue ([`MapId::STANDARD`], through [`catalogue::explain_with`], like the app and
//! `report`). Each
//! map is scored against the target object's mask ([`metrics`]: pointing game, mass in mask)
//! and by its deletion curve ([`crate::explain::faithfulness`]). The model's answers need not
//! be right for the numbers to mean something: the maps explain what the model did.
//!
//! Questions cycle through the kinds that have a target object (colour, shape, exists-"yes",
//! where; count questions have none): scene i starts at kind `i mod 4` and takes the first kind
//! the scene has a question of, one question of it drawn with a generator seeded by the scene.
//! Everything is deterministic for a seed.
//!
//! **Pipelines and regions.** The model is a [`SessionModel`] of any pipeline; each scene's
//! picture (in memory) goes through that pipeline's own processor and generation, and its
//! relevancy and deletion experiments through the pipeline's ([`SessionModel::generate`],
//! [`SessionModel::relevancy_of_image`], [`SessionModel::deletion_of_image`]). A run scores one
//! image region ([`scenes::scored`]): the high-resolution grid of a LLaVA-NeXT / OneVision
//! model by default (its base view with `region: Some(Base)`), the one region (a LLaVA-1.5
//! patch grid, a Qwen2-VL merged-patch grid) otherwise. The object mask is carried onto each
//! region's cells through their rectangles ([`metrics::region_coverage`]); the pointing game,
//! the mass in mask and the deletion curves (which blank the scored region's cells) are
//! computed on the scored region, and for a session of several regions the pointing game and
//! the mass in mask of every region are reported too.

pub mod heads;
pub mod metrics;
pub mod report;
pub mod sanity;
pub mod scenes;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::demo::{scene_seed, Question, QuestionKind, Scene, SceneConfig};
use crate::explain::catalogue::{self, CatalogueError, MapId, Options};
use crate::explain::causal::{self, CausalError};
use crate::explain::faithfulness::{fraction_ks, FaithfulnessError};
use crate::explain::relevancy::{self, RelevancyError};
use crate::generate::{Capture, GenerateError};
use crate::job::{ServiceError, SessionModel};
use crate::session::{CausalParams, RegionKind, Session};
pub use report::{
    EvalReport, MethodScene, MethodSummary, Parameters, RegionGrid, RegionScore, RegionSummary,
    SceneResult, Timings,
};
use scenes::{for_each_scene, EvalScene, Scored};

/// The most scenes one run accepts.
pub const MAX_SCENES: usize = 10_000;

/// The dataset seed of the held-out scenes: the demo model trained on seed 1 (`tools/train_demo.py`).
pub const HELD_OUT_SEED: u64 = 2;

/// The question kinds that name a target object, in the order scenes cycle through them.
pub const TARGET_KINDS: [QuestionKind; 4] = [
    QuestionKind::Color,
    QuestionKind::Shape,
    QuestionKind::Exists,
    QuestionKind::Where,
];

/// Settings of a benchmark run.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// The model's name in the report.
    pub model_label: String,
    /// Number of scenes, 1..=[`MAX_SCENES`].
    pub scenes: usize,
    /// Dataset seed.
    pub seed: u64,
    /// Most tokens generated per answer.
    pub max_new_tokens: usize,
    /// Steps of the deletion curves (the fraction removed goes 0, 1/steps, ..., 1).
    pub steps: usize,
    /// Fraction of patches removed for the probability drop.
    pub drop_fraction: f32,
    /// Modified images per model call in the deletion curves.
    pub batch: usize,
    /// Maps scored after the [`MapId::STANDARD`] ones (`attention.heads.best` on the demo).
    pub extra: Vec<MapId>,
    /// The image region scored (`None`: the high-resolution grid of a LLaVA-NeXT / OneVision
    /// model, else the one region).
    pub region: Option<RegionKind>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            model_label: String::new(),
            scenes: 50,
            seed: HELD_OUT_SEED,
            max_new_tokens: 8,
            steps: 10,
            drop_fraction: crate::explain::faithfulness::DEFAULT_DROP_FRACTION,
            batch: crate::explain::faithfulness::DEFAULT_BATCH,
            extra: Vec::new(),
            region: None,
        }
    }
}

/// Why a benchmark run failed; each variant is one clear sentence.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The number of scenes is out of range.
    #[error("--scenes must be between 1 and {MAX_SCENES}, got {0}")]
    Scenes(usize),
    /// The number of deletion steps is out of range.
    #[error("--steps must be between 1 and the number of patches ({patches}), got {steps}")]
    Steps {
        /// Requested steps.
        steps: usize,
        /// Patches of the model's grid.
        patches: usize,
    },
    /// The drop fraction is outside [0, 1].
    #[error("the drop fraction must be in [0, 1], got {0}")]
    DropFraction(f32),
    /// Generation failed.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// Relevancy failed.
    #[error("relevancy failed: {0}")]
    Relevancy(#[from] RelevancyError),
    /// The causal explanation failed.
    #[error("causal explanation failed: {0}")]
    Causal(#[from] CausalError),
    /// A map could not be read.
    #[error("scene {scene}: {source}")]
    Map {
        /// Scene index.
        scene: usize,
        /// The cause.
        source: CatalogueError,
    },
    /// A deletion curve failed.
    #[error("deletion curve failed: {0}")]
    Faithfulness(#[from] FaithfulnessError),
    /// A model-backed step (relevancy, deletion) failed.
    #[error(transparent)]
    Job(#[from] ServiceError),
    /// The region asked for is not one of the model's sessions'.
    #[error("--region {asked}: this model's sessions have no such image region (they have {has})")]
    Region {
        /// The kind asked for.
        asked: &'static str,
        /// The kinds the sessions have.
        has: String,
    },
    /// A scene's scored grid differs from the first scene's.
    #[error("scene {scene}: the scored grid is {grid:?}, but the first scene's was {first:?}")]
    Grid {
        /// Scene index.
        scene: usize,
        /// Its grid.
        grid: [usize; 2],
        /// The first scene's grid.
        first: [usize; 2],
    },
    /// The sanity check's forward failed.
    #[error("the sanity check failed: {0}")]
    Sanity(String),
    /// The run was cancelled.
    #[error("the evaluation was cancelled")]
    Cancelled,
}

/// The question asked about scene `index` (seed `seed` of the scene): see the module docs.
/// `None` when the scene has no question about an object.
pub fn pick_question(
    scene: &Scene,
    index: usize,
    seed: u64,
    config: &SceneConfig,
) -> Option<Question> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4556_414c_5155_4553);
    (0..TARGET_KINDS.len())
        .map(|j| TARGET_KINDS[(index + j) % TARGET_KINDS.len()])
        .find_map(|kind| {
            let with_target: Vec<Question> = scene
                .questions(kind, config)
                .into_iter()
                .filter(|q| q.object.is_some())
                .collect();
            with_target.choose(&mut rng).cloned()
        })
}

/// Whether the model's answer text equals the expected one (case, surrounding space and a final
/// full stop ignored).
pub fn answer_matches(output: &str, expected: &str) -> bool {
    let norm = |s: &str| s.trim().trim_end_matches('.').trim().to_lowercase();
    norm(output) == norm(expected)
}

/// Checks a number of scenes: 1..=[`MAX_SCENES`].
pub fn check_scenes(scenes: usize) -> Result<(), EvalError> {
    if scenes == 0 || scenes > MAX_SCENES {
        return Err(EvalError::Scenes(scenes));
    }
    Ok(())
}

/// Runs the benchmark with an already loaded model of any pipeline (LLaVA-style, Qwen2-VL /
/// Qwen2.5-VL, LLaVA-NeXT / OneVision). `on_scene(done, total)` is called after each scene;
/// setting `cancel` stops the run between scenes.
pub fn evaluate(
    model: &SessionModel,
    options: &EvalOptions,
    cancel: &AtomicBool,
    on_scene: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, EvalError> {
    check_scenes(options.scenes)?;
    if !(0.0..=1.0).contains(&options.drop_fraction) {
        return Err(EvalError::DropFraction(options.drop_fraction));
    }
    let started = Instant::now();
    let mut timings = Timings::default();
    let mut results = Vec::new();
    let mut layout: Option<Layout> = None;
    for_each_scene(options, options.scenes, cancel, on_scene, |scene| {
        let ctx = SceneContext {
            model,
            options,
            cancel,
        };
        results.push(ctx.run(&scene, &mut layout, &mut timings)?);
        Ok(())
    })?;
    timings.total = started.elapsed().as_secs_f64();
    let layout = layout.unwrap_or_default();
    let parameters = Parameters {
        model: options.model_label.clone(),
        scenes: options.scenes,
        seed: options.seed,
        max_new_tokens: options.max_new_tokens,
        image_grid: layout.grid,
        ks: layout.ks,
        drop_fraction: options.drop_fraction,
        region: layout.region,
        regions: layout.regions,
    };
    Ok(EvalReport::new(
        parameters,
        &methods(options),
        results,
        timings,
    ))
}

/// The maps a run scores: [`MapId::STANDARD`], then `options.extra`, each once.
fn methods(options: &EvalOptions) -> Vec<MapId> {
    let mut ids = MapId::STANDARD.to_vec();
    for id in &options.extra {
        if !ids.contains(id) {
            ids.push(*id);
        }
    }
    ids
}

/// The image layout of a run's sessions, fixed by its first scored scene (every scene has the
/// same size, so every session the same regions).
#[derive(Debug, Clone, Default)]
struct Layout {
    /// The scored region's kind and grid.
    region: Option<RegionKind>,
    grid: [usize; 2],
    /// Every region's kind and grid.
    regions: Vec<RegionGrid>,
    /// Patch counts of the deletion curves.
    ks: Vec<usize>,
}

impl Layout {
    fn of(session: &Session, scored: &Scored, steps: usize) -> Result<Self, EvalError> {
        let patches = scored.cells.len();
        if steps == 0 || steps > patches {
            return Err(EvalError::Steps { steps, patches });
        }
        Ok(Self {
            region: Some(scored.region.kind),
            grid: scored.region.grid,
            regions: session
                .regions()
                .iter()
                .map(|r| RegionGrid {
                    region: r.kind,
                    grid: r.grid,
                })
                .collect(),
            ks: fraction_ks(patches, steps),
        })
    }
}

struct SceneContext<'a> {
    model: &'a SessionModel,
    options: &'a EvalOptions,
    cancel: &'a AtomicBool,
}

impl SceneContext<'_> {
    #[tracing::instrument(name = "eval_scene", skip_all, fields(scene = eval.index))]
    fn run(
        &self,
        eval: &EvalScene,
        layout: &mut Option<Layout>,
        timings: &mut Timings,
    ) -> Result<SceneResult, EvalError> {
        let index = eval.index;
        let mask = eval.mask();
        let image = eval.image();
        let request = eval.request(self.model, self.options.max_new_tokens, Capture::Full);
        let clock = Instant::now();
        let mut session = self
            .model
            .generate(&image, &request, self.cancel, &mut |_| {})?;
        timings.generate += clock.elapsed().as_secs_f64();

        let scored = scenes::scored(&session, self.options.region)?;
        let layout = match layout {
            Some(l) => l,
            None => layout.insert(Layout::of(&session, &scored, self.options.steps)?),
        };
        if layout.grid != scored.region.grid {
            return Err(EvalError::Grid {
                scene: index,
                grid: scored.region.grid,
                first: layout.grid,
            });
        }

        let clock = Instant::now();
        let rows = self
            .model
            .relevancy_of_image(&session, &image, &[0], &mut |_| {})?;
        relevancy::store(&mut session, &rows)?;
        timings.relevancy += clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        let params = CausalParams::for_session(&session);
        session.manifest.causal = Some(causal::explain_session(&session, &[0], &params)?);
        timings.causal += clock.elapsed().as_secs_f64();

        let coverage = scenes::coverage(&session, mask);
        let random_seed = scene_seed(self.options.seed ^ 0x5241_4e44_4f4d, index as u64);
        let ids = methods(self.options);
        let maps = maps_of(&session, random_seed, &ids).map_err(|source| EvalError::Map {
            scene: index,
            source,
        })?;

        let clock = Instant::now();
        let mut deletion = self
            .model
            .deletion_of_image(&session, &image, 0, Some(scored.region.kind))?
            .with_batch(self.options.batch);
        let curves = deletion.curves(&maps, &layout.ks)?;
        let patches = deletion.patches();
        let regions = scenes::region_cells(&session);
        let cells = scored.cells.clone();
        let mut methods = Vec::with_capacity(maps.len());
        for ((method, map), curve) in ids.iter().zip(&maps).zip(curves) {
            let per_region = if regions.len() > 1 {
                regions
                    .iter()
                    .map(|(r, range)| RegionScore {
                        region: r.kind,
                        pointing: metrics::pointing_hit(
                            &map[range.clone()],
                            &coverage[range.clone()],
                        ),
                        mass_in_mask: metrics::mass_in_mask(
                            &map[range.clone()],
                            &coverage[range.clone()],
                        ),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            methods.push(MethodScene {
                method: *method,
                pointing: metrics::pointing_hit(&map[cells.clone()], &coverage[cells.clone()]),
                mass_in_mask: metrics::mass_in_mask(&map[cells.clone()], &coverage[cells.clone()]),
                deletion_area: crate::explain::faithfulness::curve_area(
                    &layout.ks, &curve, patches,
                ),
                deletion: curve,
                drop: deletion.probability_drop(map, self.options.drop_fraction)?,
                regions: per_region,
            });
        }
        timings.deletion += clock.elapsed().as_secs_f64();
        timings.deletion_images += deletion.images_run();

        let ids: Vec<u32> = session.output_ids.iter().map(|&i| i as u32).collect();
        let output = self.model.prompts().decode(&ids).trim().to_string();
        let question = &eval.question;
        Ok(SceneResult {
            index,
            question: question.question.clone(),
            kind: question.kind.name().to_string(),
            answer: question.answer.clone(),
            correct: answer_matches(&output, &question.answer),
            output,
            object: eval.object(),
            object_area: mask.count() as f32 / (mask.width() * mask.height()).max(1) as f32,
            methods,
        })
    }
}

/// The maps `eval` scores for the first answer token of a scene's session: every
/// [`MapId::STANDARD`] map in order, from the catalogue, the random one seeded with
/// `random_seed`.
pub fn scene_maps(session: &Session, random_seed: u64) -> Result<Vec<Vec<f32>>, CatalogueError> {
    maps_of(session, random_seed, &MapId::STANDARD)
}

/// The maps `ids` of the first answer token, the random one seeded with `random_seed`.
pub fn maps_of(
    session: &Session,
    random_seed: u64,
    ids: &[MapId],
) -> Result<Vec<Vec<f32>>, CatalogueError> {
    let options = Options {
        seed: Some(random_seed),
        compute_causal: false,
    };
    ids.iter()
        .map(|id| catalogue::explain_with(session, &[0], id, options).map(|e| e.cells()))
        .collect()
}
