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

pub mod metrics;
pub mod report;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::demo::{self, scene_seed, Question, QuestionKind, Scene, SceneConfig};
use crate::explain::catalogue::{self, CatalogueError, MapId, Options};
use crate::explain::causal::{self, CausalError};
use crate::explain::faithfulness::{fraction_ks, Deletion, FaithfulnessError};
use crate::explain::relevancy::{self, RelevancyError};
use crate::generate::{self, Capture, GenerateError, LoadedModel, RunRequest};
use crate::session::{CausalParams, Session};
pub use report::{EvalReport, MethodScene, MethodSummary, Parameters, SceneResult, Timings};

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

/// Runs the benchmark with an already loaded model. `on_scene(done, total)` is called after
/// each scene; setting `cancel` stops the run between scenes.
pub fn evaluate(
    loaded: &LoadedModel,
    options: &EvalOptions,
    cancel: &AtomicBool,
    on_scene: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, EvalError> {
    check_scenes(options.scenes)?;
    if !(0.0..=1.0).contains(&options.drop_fraction) {
        return Err(EvalError::DropFraction(options.drop_fraction));
    }
    let grid = loaded.model.image_grid();
    let patches = grid[0] * grid[1];
    if options.steps == 0 || options.steps > patches {
        return Err(EvalError::Steps {
            steps: options.steps,
            patches,
        });
    }
    let ks = fraction_ks(patches, options.steps);
    let config = SceneConfig::default();
    let started = Instant::now();
    let mut timings = Timings::default();
    let mut results = Vec::new();
    for index in 0..options.scenes {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(EvalError::Cancelled);
        }
        let seed = scene_seed(options.seed, index as u64);
        let scene = demo::generate(seed, &config);
        if let Some(question) = pick_question(&scene, index, seed, &config) {
            let ctx = SceneContext {
                loaded,
                options,
                ks: &ks,
                cancel,
            };
            results.push(ctx.run(index, seed, &scene, &question, &mut timings)?);
        }
        on_scene(index + 1, options.scenes);
    }
    timings.total = started.elapsed().as_secs_f64();
    let parameters = Parameters {
        model: options.model_label.clone(),
        scenes: options.scenes,
        seed: options.seed,
        max_new_tokens: options.max_new_tokens,
        image_grid: grid,
        ks,
        drop_fraction: options.drop_fraction,
    };
    Ok(EvalReport::new(
        parameters,
        &MapId::STANDARD,
        results,
        timings,
    ))
}

struct SceneContext<'a> {
    loaded: &'a LoadedModel,
    options: &'a EvalOptions,
    ks: &'a [usize],
    cancel: &'a AtomicBool,
}

impl SceneContext<'_> {
    fn run(
        &self,
        index: usize,
        seed: u64,
        scene: &Scene,
        question: &Question,
        timings: &mut Timings,
    ) -> Result<SceneResult, EvalError> {
        let model = &self.loaded.model;
        let object = question.object.unwrap_or(0);
        let mask = &scene.objects[object].mask;
        let request = RunRequest {
            model: self.loaded.name.clone(),
            image: format!("scene {index} (seed {seed})").into(),
            prompt: question.question.clone(),
            max_new_tokens: self.options.max_new_tokens,
            capture: Capture::Full,
            ..RunRequest::default()
        };
        let clock = Instant::now();
        let image = image::DynamicImage::ImageRgb8(scene.image.clone());
        let mut session =
            generate::generate(self.loaded, &image, &request, self.cancel, &mut |_| {})?;
        timings.generate += clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        relevancy::ensure(model, &mut session, &[0], &mut |_| {})?;
        timings.relevancy += clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        let params = CausalParams::for_session(&session);
        session.manifest.causal = Some(causal::explain_session(&session, &[0], &params)?);
        timings.causal += clock.elapsed().as_secs_f64();

        let coverage = metrics::region_coverage(
            mask,
            &session.regions(),
            session.manifest.image.original_size,
        );
        let random_seed = scene_seed(self.options.seed ^ 0x5241_4e44_4f4d, index as u64);
        let maps = scene_maps(&session, random_seed).map_err(|source| EvalError::Map {
            scene: index,
            source,
        })?;

        let clock = Instant::now();
        let mut deletion = Deletion::new(model, &session, 0)?.with_batch(self.options.batch);
        let curves = deletion.curves(&maps, self.ks)?;
        let patches = deletion.patches();
        let mut methods = Vec::with_capacity(maps.len());
        for ((method, map), curve) in MapId::STANDARD.iter().zip(&maps).zip(curves) {
            methods.push(MethodScene {
                method: *method,
                pointing: metrics::pointing_hit(map, &coverage),
                mass_in_mask: metrics::mass_in_mask(map, &coverage),
                deletion_area: crate::explain::faithfulness::curve_area(self.ks, &curve, patches),
                deletion: curve,
                drop: deletion.probability_drop(map, self.options.drop_fraction)?,
            });
        }
        timings.deletion += clock.elapsed().as_secs_f64();
        timings.deletion_images += deletion.images_run();

        let ids: Vec<u32> = session.output_ids.iter().map(|&i| i as u32).collect();
        let output = self.loaded.prompts.decode(&ids).trim().to_string();
        Ok(SceneResult {
            index,
            question: question.question.clone(),
            kind: question.kind.name().to_string(),
            answer: question.answer.clone(),
            correct: answer_matches(&output, &question.answer),
            output,
            object,
            object_area: mask.count() as f32 / (mask.width() * mask.height()).max(1) as f32,
            methods,
        })
    }
}

/// The maps `eval` scores for the first answer token of a scene's session: every
/// [`MapId::STANDARD`] map in order, from the catalogue, the random one seeded with
/// `random_seed`.
pub fn scene_maps(session: &Session, random_seed: u64) -> Result<Vec<Vec<f32>>, CatalogueError> {
    let options = Options {
        seed: Some(random_seed),
        compute_causal: false,
    };
    MapId::STANDARD
        .iter()
        .map(|id| catalogue::explain_with(session, &[0], id, options).map(|e| e.cells()))
        .collect()
}
