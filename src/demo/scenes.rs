//! A deterministic generator of synthetic scenes with known object masks, and questions about
//! them whose answers (and the object each is about) are known.
//!
//! A scene holds 1–4 non-overlapping shapes on a dark plain, noisy or striped background. Objects
//! are painted in order (later ones on top), so a mask is exactly the set of pixels that show
//! its object; with the default placement nothing overlaps and masks are whole shapes.

use super::draw::{paint_background, Background, Color, Shape};
use super::mask::Mask;
use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Settings of the scene generator.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneConfig {
    /// Side of the square image in pixels.
    pub size: u32,
    /// Fewest objects per scene (at least 1).
    pub min_objects: usize,
    /// Most objects per scene.
    pub max_objects: usize,
    /// Smallest circumradius in pixels.
    pub min_radius: f32,
    /// Largest circumradius in pixels.
    pub max_radius: f32,
    /// Pixels kept free between the bounding circles of two objects.
    pub gap: f32,
    /// Where-questions are asked only when the object's centroid is at least this far (in
    /// pixels) from the image centre along the dominant axis.
    pub where_min_offset: f32,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            size: 64,
            min_objects: 1,
            max_objects: 4,
            min_radius: 8.0,
            max_radius: 12.0,
            gap: 2.0,
            where_min_offset: 8.0,
        }
    }
}

/// One object of a scene.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneObject {
    /// Its shape.
    pub shape: Shape,
    /// Its colour name.
    pub color: Color,
    /// The exact RGB value its pixels were painted with.
    pub rgb: [u8; 3],
    /// Centre (x, y) in pixels.
    pub center: (f32, f32),
    /// Circumradius in pixels.
    pub radius: f32,
    /// The pixels that show this object (after occlusion by later objects).
    pub mask: Mask,
}

/// The kinds of questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuestionKind {
    /// "What color is the star?" → a colour.
    Color,
    /// "What shape is the blue object?" → a shape.
    Shape,
    /// "Is there a green square?" → yes / no.
    Exists,
    /// "How many shapes are there?" → one … four.
    Count,
    /// "Where is the red circle?" → left / right / top / bottom (relative to the image centre).
    Where,
}

impl QuestionKind {
    /// Every kind, in a fixed order.
    pub const ALL: [QuestionKind; 5] = [
        QuestionKind::Color,
        QuestionKind::Shape,
        QuestionKind::Exists,
        QuestionKind::Count,
        QuestionKind::Where,
    ];

    /// The lowercase name used in datasets.
    pub fn name(self) -> &'static str {
        match self {
            QuestionKind::Color => "color",
            QuestionKind::Shape => "shape",
            QuestionKind::Exists => "exists",
            QuestionKind::Count => "count",
            QuestionKind::Where => "where",
        }
    }
}

/// A question about a scene with its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// What kind of question it is.
    #[serde(rename = "type")]
    pub kind: QuestionKind,
    /// The question text.
    pub question: String,
    /// The expected answer (one word).
    pub answer: String,
    /// Index of the object the question is about, if it is about one.
    pub object: Option<usize>,
}

/// A generated scene.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// The picture.
    pub image: RgbImage,
    /// The background alone (what the picture shows outside every mask).
    pub background: RgbImage,
    /// Which background texture was used.
    pub background_kind: Background,
    /// The objects, in painting order.
    pub objects: Vec<SceneObject>,
}

/// The seed of scene `index` in a dataset with seed `seed` (a SplitMix64 step, so nearby
/// indices give unrelated scenes).
pub fn scene_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Generates the scene for a seed (same seed and config → same scene).
pub fn generate(seed: u64, config: &SceneConfig) -> Scene {
    generate_with(&mut StdRng::seed_from_u64(seed), config)
}

/// Generates a scene from a random number generator.
pub fn generate_with<R: Rng>(rng: &mut R, config: &SceneConfig) -> Scene {
    let size = config.size;
    let kind = *[Background::Plain, Background::Noise, Background::Stripes]
        .choose(rng)
        .unwrap_or(&Background::Plain);
    let background = paint_background(rng, kind, size);
    let lo = config.min_objects.max(1);
    let hi = config.max_objects.max(lo);
    let wanted = rng.gen_range(lo..=hi);

    let mut placed: Vec<(Shape, Color, (f32, f32), f32)> = Vec::new();
    let mut attempts = 0;
    while placed.len() < wanted && attempts < 400 {
        attempts += 1;
        let r = rng.gen_range(config.min_radius..=config.max_radius.max(config.min_radius));
        let span = size as f32 - 2.0 * r - 2.0;
        if span <= 0.0 {
            break;
        }
        let c = (
            r + 1.0 + rng.gen::<f32>() * span,
            r + 1.0 + rng.gen::<f32>() * span,
        );
        let free = placed.iter().all(|(_, _, pc, pr)| {
            let (dx, dy) = (pc.0 - c.0, pc.1 - c.1);
            // Triangles reach 1.15 r from their centre; the others stay within r.
            (dx * dx + dy * dy).sqrt() >= 1.15 * (pr + r) + config.gap
        });
        if !free {
            continue;
        }
        // Mostly distinct shapes and colours; sometimes a repeated one, never a repeated pair.
        let shape = pick(rng, &Shape::ALL, placed.iter().map(|p| p.0).collect());
        let color = pick(rng, &Color::ALL, placed.iter().map(|p| p.1).collect());
        if placed.iter().any(|p| p.0 == shape && p.1 == color) {
            continue;
        }
        placed.push((shape, color, c, r));
    }

    let mut image = background.clone();
    let mut label: Vec<Option<usize>> = vec![None; (size * size) as usize];
    let mut objects = Vec::with_capacity(placed.len());
    for (i, (shape, color, center, radius)) in placed.into_iter().enumerate() {
        let rgb = color
            .rgb()
            .map(|v| (v as i32 + rng.gen_range(-10..=10)).clamp(0, 255) as u8);
        for y in 0..size {
            for x in 0..size {
                let (dx, dy) = (x as f32 + 0.5 - center.0, y as f32 + 0.5 - center.1);
                if shape.contains(dx, dy, radius) {
                    image.put_pixel(x, y, Rgb(rgb));
                    label[(y * size + x) as usize] = Some(i);
                }
            }
        }
        objects.push(SceneObject {
            shape,
            color,
            rgb,
            center,
            radius,
            mask: Mask::new(size, size),
        });
    }
    for (idx, l) in label.iter().enumerate() {
        if let Some(i) = l {
            let (x, y) = (idx as u32 % size, idx as u32 / size);
            objects[*i].mask.set(x, y, true);
        }
    }
    Scene {
        image,
        background,
        background_kind: kind,
        objects,
    }
}

/// Picks a value, preferring (with probability 0.8) one not in `used`.
fn pick<R: Rng, T: Copy + PartialEq>(rng: &mut R, all: &[T], used: Vec<T>) -> T {
    let fresh: Vec<T> = all.iter().copied().filter(|v| !used.contains(v)).collect();
    let pool = if !fresh.is_empty() && rng.gen_bool(0.8) {
        &fresh[..]
    } else {
        all
    };
    pool[rng.gen_range(0..pool.len())]
}

const COUNT_WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

impl Scene {
    /// Every question of the given kind that has one unambiguous answer for this scene.
    ///
    /// Colour questions name a shape that occurs once; shape questions a colour that occurs
    /// once; where-questions an object whose centroid is clearly left, right, above or below the
    /// image centre (the dominant offset at least twice the other and at least
    /// `where_min_offset` pixels). Exists-questions are asked about every object ("yes") and about
    /// every absent pair whose shape or colour is present ("no").
    pub fn questions(&self, kind: QuestionKind, config: &SceneConfig) -> Vec<Question> {
        let objs = &self.objects;
        let q = |question: String, answer: &str, object: Option<usize>| Question {
            kind,
            question,
            answer: answer.to_string(),
            object,
        };
        match kind {
            QuestionKind::Color => objs
                .iter()
                .enumerate()
                .filter(|(_, o)| objs.iter().filter(|p| p.shape == o.shape).count() == 1)
                .map(|(i, o)| {
                    let text = format!("What color is the {}?", o.shape.name());
                    q(text, o.color.name(), Some(i))
                })
                .collect(),
            QuestionKind::Shape => objs
                .iter()
                .enumerate()
                .filter(|(_, o)| objs.iter().filter(|p| p.color == o.color).count() == 1)
                .map(|(i, o)| {
                    let text = format!("What shape is the {} object?", o.color.name());
                    q(text, o.shape.name(), Some(i))
                })
                .collect(),
            QuestionKind::Exists => {
                let mut out: Vec<Question> = objs
                    .iter()
                    .enumerate()
                    .map(|(i, o)| {
                        let text = format!("Is there a {} {}?", o.color.name(), o.shape.name());
                        q(text, "yes", Some(i))
                    })
                    .collect();
                for s in Shape::ALL {
                    for c in Color::ALL {
                        let present = objs.iter().any(|o| o.shape == s && o.color == c);
                        let related = objs.iter().any(|o| o.shape == s || o.color == c);
                        if !present && related {
                            let text = format!("Is there a {} {}?", c.name(), s.name());
                            out.push(q(text, "no", None));
                        }
                    }
                }
                out
            }
            QuestionKind::Count => {
                let word = COUNT_WORDS.get(objs.len()).copied().unwrap_or("many");
                vec![q("How many shapes are there?".to_string(), word, None)]
            }
            QuestionKind::Where => objs
                .iter()
                .enumerate()
                .filter_map(|(i, o)| {
                    let side = self.side(i, config)?;
                    let text = format!("Where is the {} {}?", o.color.name(), o.shape.name());
                    Some(q(text, side, Some(i)))
                })
                .collect(),
        }
    }

    /// Where object `i` is relative to the image centre ("left", "right", "top", "bottom"), or
    /// `None` when that is not clear-cut.
    pub fn side(&self, i: usize, config: &SceneConfig) -> Option<&'static str> {
        let (cx, cy) = self.objects.get(i)?.mask.centroid()?;
        let half = self.image.width() as f32 / 2.0;
        let (dx, dy) = (cx - half, cy - self.image.height() as f32 / 2.0);
        let min = config.where_min_offset;
        if dx.abs() >= 2.0 * dy.abs() && dx.abs() >= min {
            Some(if dx < 0.0 { "left" } else { "right" })
        } else if dy.abs() >= 2.0 * dx.abs() && dy.abs() >= min {
            Some(if dy < 0.0 { "top" } else { "bottom" })
        } else {
            None
        }
    }

    /// One question of each kind that has any, chosen at random (exists-questions are "yes" or
    /// "no" with equal probability when both exist).
    pub fn sample_questions<R: Rng>(&self, rng: &mut R, config: &SceneConfig) -> Vec<Question> {
        let mut out = Vec::new();
        for kind in QuestionKind::ALL {
            let all = self.questions(kind, config);
            let pool: Vec<&Question> = if kind == QuestionKind::Exists {
                let want = if rng.gen_bool(0.5) { "yes" } else { "no" };
                let matching: Vec<&Question> = all.iter().filter(|q| q.answer == want).collect();
                if matching.is_empty() {
                    all.iter().collect()
                } else {
                    matching
                }
            } else {
                all.iter().collect()
            };
            if let Some(q) = pool.choose(rng) {
                out.push((*q).clone());
            }
        }
        out
    }
}
