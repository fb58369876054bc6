//! Deterministic synthetic sessions with structured attention, for tests, benchmarks and demos.
//!
//! The picture is a sky-to-grass gradient with a red disc (upper left) and a yellow square (lower
//! right). Every attention row is a softmax over the keys it may see (causal zeros after the
//! query), with a strong sink at position 0, a bump on the previous position, and, for answer
//! tokens, a few hot patches on one of the two objects; how much a head looks at the image
//! depends on its layer and index. Nothing here is random at run time: the same spec always gives
//! the same session, bit for bit.

use std::collections::BTreeMap;

use super::{
    Array, GenerationInfo, ImageInfo, ImageRegion, Manifest, ModelInfo, RegionKind, Session,
    TokenStrings, SCHEMA,
};

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

/// The two objects of the picture, in fractions of the image side: (centre x, centre y, size).
const DISC: (f32, f32, f32) = (0.3, 0.32, 0.2);
const SQUARE: (f32, f32, f32) = (0.7, 0.68, 0.16);

fn in_disc(x: f32, y: f32) -> bool {
    let (cx, cy, r) = DISC;
    (x - cx).powi(2) + (y - cy).powi(2) <= r * r
}

fn in_square(x: f32, y: f32) -> bool {
    let (cx, cy, h) = SQUARE;
    (x - cx).abs() <= h && (y - cy).abs() <= h
}

/// Patches (row-major indices) whose centre lies on object 0 (disc) or 1 (square).
fn object_patches(grid: [usize; 2], object: usize) -> Vec<usize> {
    let [rows, cols] = grid;
    let mut out = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            let x = (c as f32 + 0.5) / cols as f32;
            let y = (r as f32 + 0.5) / rows as f32;
            let hit = if object == 0 {
                in_disc(x, y)
            } else {
                in_square(x, y)
            };
            if hit {
                out.push(r * cols + c);
            }
        }
    }
    if out.is_empty() {
        // A grid too coarse to hit the object: take the patch under its centre.
        let (cx, cy, _) = if object == 0 { DISC } else { SQUARE };
        let r = ((cy * rows as f32) as usize).min(rows - 1);
        let c = ((cx * cols as f32) as usize).min(cols - 1);
        out.push(r * cols + c);
    }
    out
}

/// Input positions of the image: the base grid, then the high-resolution rows, each closed by
/// a separator.
fn image_len(spec: &SyntheticSpec) -> usize {
    let base = spec.grid[0] * spec.grid[1];
    base + spec.highres.map_or(0, |[rows, cols]| rows * (cols + 1))
}

/// Where the cells of a synthetic image lie inside its span of input positions.
struct ImageLayout {
    /// Offsets of the cells inside the span, region by region, each row-major.
    cells: Vec<usize>,
    /// Offsets of the cells on object 0 (disc) and 1 (square), in every region.
    objects: [Vec<usize>; 2],
    /// The regions over a picture of `size` (`[width, height]`) when there are two; empty for
    /// one (the manifest's image span and grid describe it).
    regions: Vec<ImageRegion>,
}

fn image_layout(spec: &SyntheticSpec, start: usize, size: [usize; 2]) -> ImageLayout {
    let base = spec.grid[0] * spec.grid[1];
    let mut cells: Vec<usize> = (0..base).collect();
    let mut objects = [object_patches(spec.grid, 0), object_patches(spec.grid, 1)];
    let mut regions = Vec::new();
    if let Some(hi) = spec.highres {
        let [rows, cols] = hi;
        let offset = |i: usize| base + (i / cols) * (cols + 1) + i % cols;
        cells.extend((0..rows * cols).map(offset));
        for (o, object) in objects.iter_mut().enumerate() {
            object.extend(object_patches(hi, o).into_iter().map(offset));
        }
        let rect = [0.0, 0.0, size[0] as f64, size[1] as f64];
        regions = vec![
            ImageRegion {
                kind: RegionKind::Base,
                span: [start, base],
                grid: spec.grid,
                rect,
                separators: Vec::new(),
            },
            ImageRegion {
                kind: RegionKind::Highres,
                span: [start + base, rows * (cols + 1)],
                grid: hi,
                rect,
                separators: (0..rows)
                    .map(|r| start + offset(r * cols + cols - 1) + 1)
                    .collect(),
            },
        ];
    }
    ImageLayout {
        cells,
        objects,
        regions,
    }
}

/// CLIP's normalisation constants (mean, std) per channel.
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

fn picture(size: usize) -> Array {
    let mut px = Array::zeros(&[3, size, size]);
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (
                (x as f32 + 0.5) / size as f32,
                (y as f32 + 0.5) / size as f32,
            );
            let rgb = if in_disc(fx, fy) {
                [0.85, 0.12, 0.1]
            } else if in_square(fx, fy) {
                [0.95, 0.85, 0.15]
            } else if fy < 0.55 {
                [0.35 + 0.3 * fy, 0.55 + 0.3 * fy, 0.95]
            } else {
                [0.2, 0.45 + 0.3 * (1.0 - fy), 0.2]
            };
            for (ch, v) in rgb.iter().enumerate() {
                px.data[(ch * size + y) * size + x] = (v - CLIP_MEAN[ch]) / CLIP_STD[ch];
            }
        }
    }
    px
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

/// A non-square picture: the square one, resampled to the grid's aspect.
fn rect_picture(grid: [usize; 2], patch_px: usize) -> Array {
    let (h, w) = (grid[0] * patch_px, grid[1] * patch_px);
    let side = h.max(w);
    let square = picture(side);
    let mut px = Array::zeros(&[3, h, w]);
    for ch in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = (y * side / h, x * side / w);
                px.data[(ch * h + y) * w + x] = square.data[(ch * side + sy) * side + sx];
            }
        }
    }
    px
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
mod tests {
    use super::*;

    #[test]
    fn rows_are_causal_softmax_and_deterministic() {
        let spec = SyntheticSpec::tiny();
        let s = synthetic_session(&spec);
        assert_eq!(s, synthetic_session(&spec));
        let gen = s.attn_gen.as_ref().expect("attn.gen");
        let n = s.num_input();
        for t in 0..s.num_output() {
            for l in 0..spec.layers {
                for h in 0..spec.heads {
                    let row = gen.row(&[t, l, h]);
                    let q = n - 1 + t;
                    let sum: f32 = row[..=q].iter().sum();
                    assert!((sum - 1.0).abs() < 1e-4, "row sums to {sum}");
                    assert!(row[q + 1..].iter().all(|&v| v == 0.0));
                    assert!(row[0] > row[1], "position 0 is a sink");
                }
            }
        }
        let full = &s.attn_full[&(spec.layers - 1)];
        for t in 0..s.num_output() {
            for h in 0..spec.heads {
                assert_eq!(full.row(&[h, n - 1 + t]), gen.row(&[t, spec.layers - 1, h]));
            }
        }
    }

    #[test]
    fn anyres_spec_gives_two_regions_a_file_accepts() {
        let s = synthetic_session(&SyntheticSpec::anyres_tiny());
        let regions = s.regions();
        let [base, hi] = &regions[..] else {
            panic!("{} regions", regions.len())
        };
        assert_eq!((base.kind, base.grid), (RegionKind::Base, [4, 4]));
        assert_eq!((hi.kind, hi.grid), (RegionKind::Highres, [6, 8]));
        assert_eq!(hi.separators.len(), 6);
        assert_eq!(s.manifest.image_span, [3, 16 + 6 * 9]);
        assert_eq!(s.manifest.image.original_size, [32, 24]);
        let cells = s.cell_positions();
        assert_eq!(cells.len(), 16 + 48);
        assert!(hi.separators.iter().all(|p| !cells.contains(p)));
        assert_eq!(hi.separators[0], 3 + 16 + 8);
        assert_eq!(s.relevancy_vit.as_ref().unwrap().shape, vec![5, 64]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("anyres.session");
        crate::session::save(&s, &file, crate::session::AttentionDtype::F32).unwrap();
        assert_eq!(crate::session::load(&file).unwrap(), s);
    }

    #[test]
    fn llava_shape_matches_the_spec() {
        let mut spec = SyntheticSpec::llava_7b();
        spec.layers = 2;
        let s = synthetic_session(&spec);
        assert_eq!(s.num_input(), 621);
        assert_eq!(s.num_positions(), 652);
        assert_eq!(s.pixel_values.shape, vec![3, 336, 336]);
        assert_eq!(s.image_range(), 5..581);
    }
}
