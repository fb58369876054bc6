//! `lvlmscope eval --sanity`: the model-randomisation test of Adebayo et al. (2018), "Sanity
//! checks for saliency maps". The decoder's layers are randomised from the top down,
//! cascading (step k randomises the last k layers; [`crate::model::randomize`]), and each
//! standard map of the first answer token is recomputed on the same scenes, the same input
//! and the same answer token. The Spearman rank correlation ρ between the map of the
//! randomised model and the map of the trained one, averaged over scenes, is reported per
//! method and step. A method whose maps do not change — ρ above [`THRESHOLD`] at every step —
//! is flagged: its map does not depend on what the model learned. The random baseline is the
//! control: it never depends on the model and is always flagged. A scene whose two maps are
//! both constant (a causal map with no explaining patch before and after) has no ranking to
//! compare and is left out of that method's mean.
//!
//! Both sides are computed the same way: one forward over the prompt records the attention of
//! the answer token's position (all layers) and the last layer's full matrix; relevancy and
//! causal results are computed from that, then the catalogue gives the maps.
//!
//! Every pipeline takes it: a Qwen2-VL or LLaVA-NeXT / OneVision model re-records through its
//! own generation of one token on the scene's picture (its processor, its M-RoPE or anyres
//! layout), with the trained model's answer token put back for relevancy and causal, and its
//! decoder randomised through the same seeded noise ([`SessionModel::load_randomized`]). The
//! maps are compared on the cells of the region the run scores (the high-resolution grid of an
//! anyres model by default).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::scenes::{self, for_each_scene};
use super::{scene_maps, EvalError, EvalOptions};
use crate::demo::scene_seed;
use crate::explain::catalogue::MapId;
use crate::explain::causal;
use crate::explain::compare::spearman;
use crate::explain::knockout::{sequence, KnockoutError};
use crate::explain::relevancy;
use crate::generate::{Capture, RunRequest};
use crate::job::SessionModel;
use crate::model::{AttentionRecorder, CaptureMode, Llava};
use crate::session::{Array, CausalParams, RegionKind, Session};

/// A method whose mean ρ stays above this at every randomisation step is flagged.
pub const THRESHOLD: f32 = 0.9;

/// The seed of the randomised weights.
pub const WEIGHT_SEED: u64 = 0x5341_4e49_5459;

/// The settings of a sanity run, recorded in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SanityParameters {
    /// The model as named on the command line.
    pub model: String,
    /// Scenes generated.
    pub scenes: usize,
    /// Dataset seed.
    pub seed: u64,
    /// Scenes with a question about an object (the ones used).
    pub scored: usize,
    /// Decoder layers.
    pub layers: usize,
    /// The flag threshold on ρ.
    pub threshold: f32,
    /// Per step, the decoder layers randomised (`[first, last]`).
    pub steps: Vec<[usize; 2]>,
    /// The image region whose cells the maps are compared on (`highres` on LLaVA-NeXT /
    /// OneVision by default, `image` otherwise).
    pub region: Option<RegionKind>,
}

/// One method's ρ per randomisation step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SanityMethod {
    /// The map.
    pub method: MapId,
    /// Mean Spearman ρ over scenes, per step (k = 1 .. layers); `null` where no scene had a
    /// ranking to compare.
    pub rho: Vec<f32>,
    /// Per step, the scenes whose two maps were not both constant (the others, e.g. a causal
    /// map that is zero everywhere before and after, have no ranking and are left out).
    pub scenes: Vec<usize>,
    /// ρ stayed above the threshold at every step: the map ignores the model's weights.
    pub flagged: bool,
}

/// The results of `eval --sanity`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SanityReport {
    /// The settings.
    pub parameters: SanityParameters,
    /// Per method, in the order of [`MapId::STANDARD`].
    pub methods: Vec<SanityMethod>,
}

/// `s` (one answer token) with its attention re-recorded by `model` in one forward over the
/// prompt, and no relevancy or causal result: what the maps of `model` are computed from.
pub fn rerecord(model: &Llava, s: &Session) -> Result<Session, KnockoutError> {
    let (embeds, _) = sequence(model, s, 0)?;
    let (layers, heads) = (model.num_layers(), model.num_heads());
    let last = layers.saturating_sub(1);
    let mut tape = AttentionRecorder::new(CaptureMode {
        generated_rows: true,
        full_layers: vec![last],
        vision: false,
    });
    let mut cache = model.new_cache();
    model
        .decoder()
        .hidden_states(&embeds, 0, &mut cache, &mut tape)?;
    let positions = s.num_positions();
    let array = |found: Option<(Vec<usize>, Vec<f32>)>, what: &str| {
        found
            .and_then(|(shape, data)| Array::new(shape, data))
            .ok_or_else(|| KnockoutError::Model(format!("the forward recorded no {what}")))
    };
    let mut out = s.clone();
    out.attn_gen = Some(array(
        tape.generated_rows(layers, heads, positions),
        "attention rows",
    )?);
    out.attn_full.clear();
    out.attn_full
        .insert(last, array(tape.full(last, positions), "full attention")?);
    out.relevancy_llm = None;
    out.relevancy_vit = None;
    out.relevancy_combined = None;
    out.manifest.relevancy_tokens.clear();
    out.manifest.causal = None;
    Ok(out)
}

/// `s` (one answer token, made by `model` or by the same model with other weights) with its
/// attention re-recorded by `model`: for a LLaVA-style model [`rerecord`]; for the other
/// pipelines one generation of one token on `image` recording the last layer's full matrix,
/// whose answer token is then set to `s`'s (the recorded rows, at the prompt's last position,
/// do not depend on it).
fn rerecorded(
    model: &SessionModel,
    s: &Session,
    image: &image::DynamicImage,
    cancel: &AtomicBool,
) -> Result<Session, EvalError> {
    if let SessionModel::Llava(m) = model {
        return rerecord(&m.model, s).map_err(|e| EvalError::Sanity(e.to_string()));
    }
    let request = RunRequest {
        model: model.name().to_string(),
        image: s.manifest.image.path.clone().into(),
        prompt: s.manifest.prompt.clone(),
        max_new_tokens: 1,
        capture: Capture::Full,
        ..RunRequest::default()
    };
    let mut out = model.generate(image, &request, cancel, &mut |_| {})?;
    if out.input_ids != s.input_ids {
        return Err(EvalError::Sanity(
            "the randomised model's prompt differs from the trained model's".to_string(),
        ));
    }
    out.output_ids = s.output_ids[..1.min(s.output_ids.len())].to_vec();
    out.manifest.tokens.output = s.manifest.tokens.output[..out.output_ids.len()].to_vec();
    Ok(out)
}

/// The standard maps of the first answer token of `s` under `model`, over the scored region's
/// cells.
fn maps(
    model: &SessionModel,
    s: &Session,
    scene: &SanityScene,
    region: Option<RegionKind>,
    cancel: &AtomicBool,
) -> Result<Vec<Vec<f32>>, EvalError> {
    let mut s = rerecorded(model, s, &scene.image, cancel)?;
    let rows = model.relevancy_of_image(&s, &scene.image, &[0], &mut |_| {})?;
    relevancy::store(&mut s, &rows)?;
    let params = CausalParams::for_session(&s);
    s.manifest.causal = Some(causal::explain_session(&s, &[0], &params)?);
    let cells = scenes::scored(&s, region)?.cells;
    let maps = scene_maps(&s, scene.random_seed).map_err(|source| EvalError::Map {
        scene: scene.index,
        source,
    })?;
    Ok(maps
        .into_iter()
        .map(|m| m[cells.clone()].to_vec())
        .collect())
}

/// A scene of the check: the trained model's session and maps.
struct SanityScene {
    index: usize,
    random_seed: u64,
    image: image::DynamicImage,
    session: Session,
    base: Vec<Vec<f32>>,
}

/// Runs the sanity check on the scenes `options` describe (the same scenes and questions as
/// [`super::evaluate`]), with a model of any pipeline: the maps are compared on the region
/// the run scores ([`scenes::scored`]). `on_scene(done, total)` counts scenes over all steps.
pub fn sanity(
    model: &SessionModel,
    options: &EvalOptions,
    cancel: &AtomicBool,
    on_scene: &mut dyn FnMut(usize, usize),
) -> Result<SanityReport, EvalError> {
    super::check_scenes(options.scenes)?;
    let (layers, _) = model.decoder_shape();
    let total = options.scenes * (layers + 1);
    let mut scenes: Vec<SanityScene> = Vec::new();
    for_each_scene(options, total, cancel, on_scene, |eval| {
        let session = eval.generate(model, 1, Capture::Rows, cancel)?;
        let mut scene = SanityScene {
            index: eval.index,
            random_seed: scene_seed(options.seed ^ 0x5241_4e44_4f4d, eval.index as u64),
            image: eval.image(),
            session,
            base: Vec::new(),
        };
        scene.base = maps(model, &scene.session, &scene, options.region, cancel)?;
        scenes.push(scene);
        Ok(())
    })?;
    let methods = MapId::STANDARD.len();
    let mut rho = vec![vec![0f64; layers]; methods];
    let mut used = vec![vec![0usize; layers]; methods];
    let constant = |m: &[f32]| m.windows(2).all(|w| w[0] == w[1]);
    let mut steps = Vec::with_capacity(layers);
    for k in 1..=layers {
        let first = layers - k;
        steps.push([first, layers - 1]);
        let randomised = model.load_randomized(first..layers, WEIGHT_SEED)?;
        for (done, scene) in scenes.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(EvalError::Cancelled);
            }
            let now = maps(&randomised, &scene.session, scene, options.region, cancel)?;
            for (m, (a, b)) in scene.base.iter().zip(&now).enumerate() {
                if constant(a) && constant(b) {
                    continue;
                }
                rho[m][k - 1] += spearman(a, b) as f64;
                used[m][k - 1] += 1;
            }
            on_scene(options.scenes * k + done + 1, total);
        }
    }
    let methods = MapId::STANDARD
        .iter()
        .zip(rho.into_iter().zip(used))
        .map(|(id, (r, used))| {
            let rho: Vec<f32> = r
                .iter()
                .zip(&used)
                .map(|(v, &n)| {
                    if n > 0 {
                        (v / n as f64) as f32
                    } else {
                        f32::NAN
                    }
                })
                .collect();
            SanityMethod {
                method: *id,
                flagged: rho.iter().all(|&x| x > THRESHOLD),
                rho,
                scenes: used,
            }
        })
        .collect();
    Ok(SanityReport {
        parameters: SanityParameters {
            model: options.model_label.clone(),
            scenes: options.scenes,
            seed: options.seed,
            scored: scenes.len(),
            layers,
            threshold: THRESHOLD,
            steps,
            region: scenes
                .first()
                .and_then(|s| scenes::scored(&s.session, options.region).ok())
                .map(|scored| scored.region.kind),
        },
        methods,
    })
}

impl SanityReport {
    /// The table printed on stdout: ρ per method (rows) and step (columns).
    pub fn table(&self) -> String {
        let p = &self.parameters;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "model randomisation (Adebayo et al. 2018), {} scenes (seed {}): Spearman ρ with \
             the trained model's map, decoder layers randomised from the top down",
            p.scored, p.seed
        );
        let header: String = p
            .steps
            .iter()
            .map(|[a, b]| {
                format!(
                    " {:>8}",
                    if a == b {
                        format!("l{a}")
                    } else {
                        format!("l{a}-{b}")
                    }
                )
            })
            .collect();
        let _ = writeln!(out, "{:<22}{header}  flag", "method");
        for m in &self.methods {
            let cells: String = m
                .rho
                .iter()
                .map(|r| match r.is_finite() {
                    true => format!(" {r:>8.3}"),
                    false => format!(" {:>8}", "-"),
                })
                .collect();
            let flag = if m.flagged {
                format!(
                    "  ρ > {} throughout: insensitive to the weights",
                    p.threshold
                )
            } else {
                String::new()
            };
            let _ = writeln!(out, "{:<22}{cells}{flag}", m.method.to_string());
        }
        out
    }
}
