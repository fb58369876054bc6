//! Deterministic synthetic sessions with structured attention, for tests, benchmarks and demos.
//!
//! The picture is a sky-to-grass gradient with a red disc (upper left) and a yellow square (lower
//! right). Every attention row is a softmax over the keys it may see (causal zeros after the
//! query), with a strong sink at position 0, a bump on the previous position, and, for answer
//! tokens, a few hot patches on one of the two objects; how much a head looks at the image
//! depends on its layer and index. Nothing here is random at run time: the same spec always gives
//! the same session, bit for bit.

use std::collections::BTreeMap;

mod picture;

use super::{Array, GenerationInfo, ImageInfo, Manifest, ModelInfo, Session, TokenStrings, SCHEMA};
use picture::{image_layout, image_len, picture, rect_picture};

/// The shape of a synthetic session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// Decoder layers (L).
    pub layers: usize,
    /// Decoder heads (H).
    pub heads: usize,
    /// `[rows, cols]` of the patch grid; P = rows × cols.
    pub grid: [usize; 2],
    /// Side of one patch in pixels of `pixel_values`.
    pub patch_px: usize,
    /// Text positions before the image (at least 1: the BOS at position 0).
    pub prefix_len: usize,
    /// Question positions after the image.
    pub question_len: usize,
    /// Generated tokens (T, at least 1).
    pub answer_len: usize,
    /// Seed of the deterministic noise.
    pub seed: u64,
    /// Also store `attn.full` of the last layer.
    pub full_last_layer: bool,
    /// Also store relevancy maps (`relevancy.llm`, `.vit`, `.combined`) for every token.
    pub relevancy: bool,
    /// `[rows, cols]` of a stitched high-resolution region after the base view `grid`, each of
    /// its rows closed by a separator (the LLaVA-NeXT / OneVision layout: two image regions
    /// over the whole picture); `None`: one region.
    pub highres: Option<[usize; 2]>,
}

impl SyntheticSpec {
    /// A tiny session for tests: 4 layers, 4 heads, a 4×4 grid, 25 input positions, 5 answer tokens.
    pub fn tiny() -> Self {
        Self {
            layers: 4,
            heads: 4,
            grid: [4, 4],
            patch_px: 4,
            prefix_len: 3,
            question_len: 6,
            answer_len: 5,
            seed: 7,
            full_last_layer: true,
            relevancy: false,
            highres: None,
        }
    }

    /// Shaped like LLaVA-1.5-7B: 32 layers × 32 heads, 24×24 patches, 621 input positions,
    /// 32 answer tokens (652 attention positions).
    pub fn llava_7b() -> Self {
        Self {
            layers: 32,
            heads: 32,
            grid: [24, 24],
            patch_px: 14,
            prefix_len: 5,
            question_len: 40,
            answer_len: 32,
            seed: 11,
            full_last_layer: false,
            relevancy: false,
            highres: None,
        }
    }

    /// A tiny two-region session for tests: [`SyntheticSpec::tiny`] with a 4×4 base view and
    /// a 6×8 high-resolution region (6 separators), over a 4:3 picture; relevancy stored.
    pub fn anyres_tiny() -> Self {
        Self {
            relevancy: true,
            highres: Some([6, 8]),
            ..Self::tiny()
        }
    }

    /// Shaped like LLaVA-OneVision-0.5B on a square image: 24 layers × 14 heads, a 27×27 base
    /// view and a 46×46 stitched high-resolution region with 46 separators (2891 image
    /// positions), 64 answer tokens, relevancy stored, a 1104×1104 picture (as fitted into a
    /// large `image_grid_pinpoints` resolution).
    pub fn onevision() -> Self {
        Self {
            layers: 24,
            heads: 14,
            grid: [27, 27],
            patch_px: 24,
            prefix_len: 5,
            question_len: 40,
            answer_len: 64,
            seed: 13,
            full_last_layer: false,
            relevancy: true,
            highres: Some([46, 46]),
        }
    }
}

/// SplitMix64: a tiny, fast, well-mixed hash used as the deterministic noise source.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A value in [0, 1) from a seed and three coordinates.
fn unit(seed: u64, a: u64, b: u64, c: u64) -> f32 {
    let h = mix(seed ^ mix(a ^ mix(b.wrapping_add(0x51) ^ mix(c.wrapping_add(0xa3)))));
    (h >> 40) as f32 / (1u64 << 24) as f32
}

const QUESTION: [&str; 12] = [
    "▁What",
    "▁colour",
    "▁is",
    "▁the",
    "▁round",
    "▁object",
    "▁and",
    "▁the",
    "▁sq",
    "uare",
    "?",
    "▁Describe",
];
const ASSISTANT: [&str; 5] = ["▁A", "SS", "IST", "ANT", ":"];
const ANSWER: [&str; 11] = [
    "▁The", "▁ball", "▁is", "▁red", "▁and", "▁the", "▁box", "▁is", "▁yel", "low", ".",
];

fn token_strings(spec: &SyntheticSpec) -> TokenStrings {
    let mut input = Vec::new();
    let prefix = ["<s>", "▁USER", ":"];
    for i in 0..spec.prefix_len {
        input.push(prefix.get(i).copied().unwrap_or("▁please").to_string());
    }
    input.extend(std::iter::repeat_n("<image>".to_string(), image_len(spec)));
    let q = spec.question_len;
    let tail = ASSISTANT.len().min(q);
    for i in 0..q - tail {
        input.push(QUESTION[i % QUESTION.len()].to_string());
    }
    input.extend(
        ASSISTANT[ASSISTANT.len() - tail..]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut output: Vec<String> = (0..spec.answer_len.saturating_sub(1))
        .map(|i| ANSWER[i % ANSWER.len()].to_string())
        .collect();
    if spec.answer_len > 0 {
        output.push("</s>".into());
    }
    TokenStrings { input, output }
}

fn token_id(s: &str) -> i64 {
    match s {
        "<s>" => 1,
        "</s>" => 2,
        "<image>" => 32000,
        _ => 3 + (mix(s.bytes().fold(0u64, |a, b| a.wrapping_mul(131) ^ b as u64)) % 31_990) as i64,
    }
}

/// Geometry and per-query focus shared by every attention row of one session.
struct Shape {
    seed: u64,
    layers: usize,
    n: usize,
    image: std::ops::Range<usize>,
    objects: [Vec<usize>; 2],
    /// Per offset in the image span: whether it lies on object 0 / 1 (`objects` as a table).
    on_object: [Vec<bool>; 2],
}

impl Shape {
    fn new(
        seed: u64,
        layers: usize,
        n: usize,
        image: std::ops::Range<usize>,
        objects: [Vec<usize>; 2],
    ) -> Self {
        let table = |o: &[usize]| {
            let mut t = vec![false; image.len()];
            o.iter().for_each(|&i| t[i] = true);
            t
        };
        let on_object = [table(&objects[0]), table(&objects[1])];
        Self {
            seed,
            layers,
            n,
            image,
            objects,
            on_object,
        }
    }

    /// How strongly head h of layer l looks at the image, in [0, 1].
    fn image_affinity(&self, l: usize, h: usize) -> f32 {
        let depth = (l as f32 + 0.5) / self.layers as f32;
        let bell = 1.0 - (2.0 * depth - 0.9).powi(2).min(1.0);
        let noise = unit(self.seed, 101, l as u64, h as u64);
        (0.25 * bell + 0.85 * noise * noise).min(1.0)
    }

    /// Fills `row[..=q]` with the softmax attention of query position `q` at layer l, head h.
    fn fill_row(&self, q: usize, l: usize, h: usize, row: &mut [f32]) {
        let aff = self.image_affinity(l, h);
        let answer_t = q.checked_sub(self.n - 1);
        let focus = answer_t.unwrap_or(q) + l / 8;
        let object = &self.objects[focus % 2];
        let on_object = &self.on_object[focus % 2];
        let mut hot = [usize::MAX; 3];
        for (k, slot) in hot.iter_mut().enumerate() {
            let pick = mix(self.seed ^ mix((focus * 7 + k) as u64)) as usize % object.len();
            *slot = self.image.start + object[pick];
        }
        let img_gain = if answer_t.is_some() || q >= self.image.end {
            1.0
        } else {
            0.3
        };
        let mut max = f32::MIN;
        for (key, v) in row.iter_mut().enumerate().take(q + 1) {
            let mut x = 0.8 * unit(self.seed, (q * 131 + key) as u64, l as u64, h as u64);
            if key == 0 {
                x += 5.0;
            }
            if key + 1 == q {
                x += 2.0;
            }
            if self.image.contains(&key) {
                if hot.contains(&key) {
                    x += img_gain * (1.5 + 5.5 * aff);
                } else if on_object[key - self.image.start] {
                    x += img_gain * 2.0 * aff;
                }
            } else if key >= self.image.end && key < self.n {
                x += 1.2 * (1.0 - aff);
            }
            *v = x;
            max = max.max(x);
        }
        let mut sum = 0.0;
        for v in row.iter_mut().take(q + 1) {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in row.iter_mut().take(q + 1) {
            *v /= sum;
        }
        for v in row.iter_mut().skip(q + 1) {
            *v = 0.0;
        }
    }
}

/// Builds a deterministic session of the given shape (see the module documentation).
///
/// Degenerate sizes are raised to the smallest sensible ones (1 layer, 1 head, a 1×1 grid, one
/// prefix position, one answer token).
pub fn synthetic_session(spec: &SyntheticSpec) -> Session {
    let mut spec = spec.clone();
    spec.layers = spec.layers.max(1);
    spec.heads = spec.heads.max(1);
    spec.grid = [spec.grid[0].max(1), spec.grid[1].max(1)];
    spec.patch_px = spec.patch_px.max(1);
    spec.prefix_len = spec.prefix_len.max(1);
    spec.answer_len = spec.answer_len.max(1);
    let tokens = token_strings(&spec);
    let n = tokens.input.len();
    let t_len = tokens.output.len();
    let s_len = n + t_len - 1;
    let picture_grid = spec.highres.unwrap_or(spec.grid);
    let size = match spec.highres {
        Some([rows, cols]) => [cols * spec.patch_px, rows * spec.patch_px],
        None => [spec.grid[0].max(spec.grid[1]) * spec.patch_px; 2],
    };
    let layout = image_layout(&spec, spec.prefix_len, size);
    let image = spec.prefix_len..spec.prefix_len + image_len(&spec);
    let shape = Shape::new(spec.seed, spec.layers, n, image, layout.objects.clone());
    let (layers, heads) = (spec.layers, spec.heads);
    let mut gen = Array::zeros(&[t_len, layers, heads, s_len]);
    for (i, row) in gen.data.chunks_exact_mut(s_len).enumerate() {
        let h = i % heads;
        let l = (i / heads) % layers;
        let t = i / (heads * layers);
        shape.fill_row(n - 1 + t, l, h, row);
    }
    let mut attn_full = BTreeMap::new();
    if spec.full_last_layer {
        let l = layers - 1;
        let mut full = Array::zeros(&[heads, s_len, s_len]);
        for (i, row) in full.data.chunks_exact_mut(s_len).enumerate() {
            shape.fill_row(i % s_len, l, i / s_len, row);
        }
        attn_full.insert(l, full);
    }
    let (relevancy_llm, relevancy_vit, relevancy_combined) = if spec.relevancy {
        synthetic_relevancy(&gen, &shape, &layout.cells)
    } else {
        (None, None, None)
    };
    let two = !layout.regions.is_empty();
    let manifest = Manifest {
        schema: SCHEMA.to_string(),
        model: ModelInfo {
            path: "synthetic".into(),
            architecture: if two {
                "LlavaOnevisionForConditionalGeneration".into()
            } else {
                "LlavaForConditionalGeneration".into()
            },
            text_layers: layers,
            text_heads: heads,
            vision_layers: 2,
            vision_heads: 2,
            image_grid: spec.grid,
            family: None,
        },
        prompt: "What colour is the round object and the square? Describe".into(),
        image: ImageInfo {
            path: "synthetic".into(),
            mode: if two { "anyres" } else { "default" }.into(),
            original_size: [size[0] as u32, size[1] as u32],
        },
        generation: GenerationInfo {
            max_new_tokens: t_len,
            temperature: 0.0,
            top_p: 1.0,
            seed: spec.seed,
            dtype: None,
            device: None,
        },
        relevancy_tokens: if spec.relevancy {
            (0..t_len).collect()
        } else {
            Vec::new()
        },
        image_span: [shape.image.start, shape.image.len()],
        regions: layout.regions,
        causal: None,
        timings: BTreeMap::new(),
        lens: Vec::new(),
        turns: Vec::new(),
        vision_attention: None,
        tokens,
    };
    let picture = if picture_grid[0] == picture_grid[1] {
        picture(size[0])
    } else {
        rect_picture(picture_grid, spec.patch_px)
    };
    Session {
        input_ids: manifest.tokens.input.iter().map(|s| token_id(s)).collect(),
        output_ids: manifest.tokens.output.iter().map(|s| token_id(s)).collect(),
        manifest,
        pixel_values: picture,
        attn_gen: Some(gen),
        attn_full,
        attn_vit: None,
        relevancy_llm,
        relevancy_vit,
        relevancy_combined,
        turns: Vec::new(),
    }
}

/// Makes `s` (a [`synthetic_session`]) the second turn of a conversation: of its positions
/// after the image, the first `earlier_question` are the first turn's question, the next
/// `earlier_answer` its answer, and the rest this turn's question. The first turn (its input
/// up to its question's end, its answer those ids) is kept as an earlier turn whose attention
/// rows are this turn's, cut at their query and renormalised. Sizes past the positions after
/// the image are cut to fit.
pub fn second_turn(mut s: Session, earlier_question: usize, earlier_answer: usize) -> Session {
    let n = s.num_input();
    let asked = (s.image_range().end + earlier_question).min(n);
    let answered = (asked + earlier_answer).min(n);
    let tokens = &s.manifest.tokens.input;
    let first = super::TurnInfo {
        tokens: Some(TokenStrings {
            input: tokens[..asked].to_vec(),
            output: tokens[asked..answered].to_vec(),
        }),
        ..super::TurnInfo::single("What is in the picture?", asked, answered - asked)
    };
    let second = super::TurnInfo {
        question_start: answered,
        earlier_answers: vec![[asked, answered - asked]],
        ..super::TurnInfo::single(&s.manifest.prompt, n, s.num_output())
    };
    let attn_gen = s.attn_gen.as_ref().filter(|_| answered > asked).map(|a| {
        let [t_len, layers, heads] = [a.shape[0], a.shape[1], a.shape[2]];
        let width = answered - 1;
        let mut out = Array::zeros(&[answered - asked, layers, heads, width]);
        for (i, row) in out.data.chunks_exact_mut(width).enumerate() {
            let (t, l, h) = (i / (layers * heads), (i / heads) % layers, i % heads);
            let seen = &a.row(&[t.min(t_len - 1), l, h])[..asked + t];
            let total: f32 = seen.iter().sum::<f32>().max(f32::MIN_POSITIVE);
            row.iter_mut().zip(seen).for_each(|(o, v)| *o = v / total);
        }
        out
    });
    s.turns = vec![super::Turn {
        input_ids: s.input_ids[..asked].to_vec(),
        output_ids: s.input_ids[asked..answered].to_vec(),
        attn_gen,
        ..Default::default()
    }];
    s.manifest.turns = vec![first, second];
    s
}

type Relevancy = (Option<Array>, Option<Array>, Option<Array>);

/// Relevancy-like maps derived from the attention (mean over layers and heads), for views to
/// draw; the vision tables have one column per cell (`cells`: their offsets in the image span).
fn synthetic_relevancy(gen: &Array, shape: &Shape, cells: &[usize]) -> Relevancy {
    let patches = cells.len();
    let (t_len, layers, heads, s_len) = (gen.shape[0], gen.shape[1], gen.shape[2], gen.shape[3]);
    let mut llm = Array::zeros(&[t_len, s_len]);
    for t in 0..t_len {
        for l in 0..layers {
            for h in 0..heads {
                for (o, v) in llm.row_mut(&[t]).iter_mut().zip(gen.row(&[t, l, h])) {
                    *o += v / (layers * heads) as f32;
                }
            }
        }
    }
    let mut vit = Array::zeros(&[t_len, patches]);
    let mut combined = Array::zeros(&[t_len, patches]);
    for t in 0..t_len {
        let object = &shape.on_object[t % 2];
        let row = llm.row(&[t]).to_vec();
        for (p, &cell) in cells.iter().enumerate() {
            let on = if object[cell] { 1.0 } else { 0.05 };
            vit.row_mut(&[t])[p] = on * (0.5 + 0.5 * unit(shape.seed, 7, t as u64, p as u64));
            combined.row_mut(&[t])[p] = row[shape.image.start + cell] * on;
        }
    }
    (Some(llm), Some(vit), Some(combined))
}

#[cfg(test)]
mod tests;
