//! The scenes every `eval` mode walks (the faithfulness / pointing benchmark, `--heads`,
//! `--sanity`): scene i of a run is `demo::generate(scene_seed(seed, i))` with the question
//! [`super::pick_question`] picks; scenes without a question about an object are skipped. Also
//! the image region a run scores on a session and the object mask carried onto its cells.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{metrics, pick_question, EvalError, EvalOptions};
use crate::demo::{self, scene_seed, Mask, Question, Scene, SceneConfig};
use crate::explain::faithfulness::scored_region;
use crate::generate::{Capture, RunRequest};
use crate::job::SessionModel;
use crate::session::{ImageRegion, RegionKind, Session};

/// One scene of a run with its question about an object.
pub struct EvalScene {
    /// Index of the scene in the run.
    pub index: usize,
    /// The scene's seed.
    pub seed: u64,
    /// The scene (picture and object masks).
    pub scene: Scene,
    /// The question asked about it (it has a target object).
    pub question: Question,
}

impl EvalScene {
    /// The picture, as the processors take it.
    pub fn image(&self) -> image::DynamicImage {
        image::DynamicImage::ImageRgb8(self.scene.image.clone())
    }

    /// Index of the target object.
    pub fn object(&self) -> usize {
        self.question.object.unwrap_or(0)
    }

    /// The target object's mask over the whole picture.
    pub fn mask(&self) -> &Mask {
        &self.scene.objects[self.object()].mask
    }

    /// The run request that asks this scene's question of `model` (greedy, `max_new_tokens`,
    /// recording `capture`); the image is named, not read.
    pub fn request(
        &self,
        model: &SessionModel,
        max_new_tokens: usize,
        capture: Capture,
    ) -> RunRequest {
        RunRequest {
            model: model.name().to_string(),
            image: format!("scene {} (seed {})", self.index, self.seed).into(),
            prompt: self.question.question.clone(),
            max_new_tokens,
            capture,
            ..RunRequest::default()
        }
    }

    /// The answer of `model` to the question, generated through its own pipeline.
    pub fn generate(
        &self,
        model: &SessionModel,
        max_new_tokens: usize,
        capture: Capture,
        cancel: &AtomicBool,
    ) -> Result<Session, EvalError> {
        let request = self.request(model, max_new_tokens, capture);
        Ok(model.generate(&self.image(), &request, cancel, &mut |_| {})?)
    }
}

/// Calls `each` on every scene of the run `options` describes that has a question about an
/// object, in order. `cancel` is checked before each scene; `on_scene(index + 1, total)` is
/// called after each scene, scored or not.
pub fn for_each_scene(
    options: &EvalOptions,
    total: usize,
    cancel: &AtomicBool,
    on_scene: &mut dyn FnMut(usize, usize),
    mut each: impl FnMut(EvalScene) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    super::check_scenes(options.scenes)?;
    let config = SceneConfig::default();
    for index in 0..options.scenes {
        if cancel.load(Ordering::Relaxed) {
            return Err(EvalError::Cancelled);
        }
        let seed = scene_seed(options.seed, index as u64);
        let scene = demo::generate(seed, &config);
        if let Some(question) = pick_question(&scene, index, seed, &config) {
            each(EvalScene {
                index,
                seed,
                scene,
                question,
            })?;
        }
        on_scene(index + 1, total);
    }
    Ok(())
}

/// The image region a run scores on one session: its kind, grid and where its cells lie among
/// the values of a map (maps give one value per cell of every region, region by region).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The region.
    pub region: ImageRegion,
    /// Its cells among a map's values.
    pub cells: Range<usize>,
}

/// The cells of every region of `session`, in order.
pub fn region_cells(session: &Session) -> Vec<(ImageRegion, Range<usize>)> {
    let mut start = 0;
    session
        .regions()
        .iter()
        .map(|r| {
            let range = start..start + r.cells();
            start = range.end;
            (r.clone(), range)
        })
        .collect()
}

/// The region of `session` a run scores: `asked`, or by default the high-resolution grid of a
/// LLaVA-NeXT / OneVision session ([`scored_region`]), else the session's one region.
pub fn scored(session: &Session, asked: Option<RegionKind>) -> Result<Scored, EvalError> {
    let regions = region_cells(session);
    let kind = asked
        .or_else(|| scored_region(session))
        .or_else(|| regions.first().map(|(r, _)| r.kind));
    regions
        .into_iter()
        .find(|(r, _)| Some(r.kind) == kind)
        .map(|(region, cells)| Scored { region, cells })
        .ok_or_else(|| {
            let has: Vec<&str> = session.regions().iter().map(|r| r.kind.name()).collect();
            EvalError::Region {
                asked: kind.map_or("image", RegionKind::name),
                has: if has.is_empty() {
                    "none".to_string()
                } else {
                    has.join(", ")
                },
            }
        })
}

/// Coverage of every cell of `session`'s regions by `mask` (a mask of the whole picture the
/// session was made from): [`metrics::region_coverage`].
pub fn coverage(session: &Session, mask: &Mask) -> Vec<f32> {
    metrics::region_coverage(
        mask,
        &session.regions(),
        session.manifest.image.original_size,
    )
}
