//! The app's shared model types: the panes, which map is shown ([`Selection`]), notices, and
//! the work in progress (a live run, a model job). Components read these instead of the app,
//! so nothing below the app imports it (docs/design.md, "The app").

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::explain::attention::HeadAgg;
use crate::explain::catalogue::{CausalHeads, Layers, MapId};
use crate::explain::relevancy::views::Normalization;
use crate::job::ModelJob;
use crate::session::{ImageRegion, RegionKind, Session};

/// The explanation method shown (keys 1–3): the catalogue's family of maps.
pub use crate::explain::catalogue::Family as Method;
/// Which relevancy map the image pane shows (key `m` under the relevancy method).
pub use crate::explain::catalogue::RelevancySource as RelSource;

/// The panes that take the keyboard, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// The answer tokens.
    Answer,
    /// The prompt tokens.
    Prompt,
    /// The image and its map.
    Image,
    /// The method pane (small multiples, bars, causal heads).
    Method,
    /// The heads × layers grid.
    Grid,
}

impl Pane {
    /// Tab order.
    pub const ORDER: [Pane; 5] = [
        Pane::Answer,
        Pane::Prompt,
        Pane::Image,
        Pane::Method,
        Pane::Grid,
    ];

    /// The pane after (`step` = 1) or before (`step` = −1) this one.
    pub fn cycle(self, step: isize) -> Pane {
        let i = Self::ORDER.iter().position(|&p| p == self).unwrap_or(0) as isize;
        let n = Self::ORDER.len() as isize;
        Self::ORDER[((i + step).rem_euclid(n)) as usize]
    }

    /// The pane's title.
    pub fn title(self) -> &'static str {
        match self {
            Pane::Answer => "Answer",
            Pane::Prompt => "Prompt",
            Pane::Image => "Image",
            Pane::Method => "Method",
            Pane::Grid => "Heads × layers",
        }
    }
}

/// How heads are combined (key `m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// The current head only.
    Head,
    /// Mean over heads.
    Mean,
    /// Maximum over heads.
    Max,
}

impl Agg {
    /// The next mode.
    pub fn next(self) -> Agg {
        match self {
            Agg::Head => Agg::Mean,
            Agg::Mean => Agg::Max,
            Agg::Max => Agg::Head,
        }
    }
}

/// What the method pane shows under the attention method (key `v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnView {
    /// All heads of the layer as small multiples, sorted by mean image attention.
    Heads,
    /// The share of attention each answer token gives to the image.
    Share,
    /// Answer → prompt-word attention.
    Words,
}

impl AttnView {
    /// The next view.
    pub fn next(self) -> AttnView {
        match self {
            AttnView::Heads => AttnView::Share,
            AttnView::Share => AttnView::Words,
            AttnView::Words => AttnView::Heads,
        }
    }
}

/// Which map the image pane shows: the method and the layer/head coordinates every pane
/// shares (the header, the grid, the small multiples, the causal heads).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    /// The method shown.
    pub method: Method,
    /// Decoder layer.
    pub layer: usize,
    /// Head (used when `agg` is [`Agg::Head`]).
    pub head: usize,
    /// Head aggregation.
    pub agg: Agg,
    /// Relevancy source.
    pub rel_source: RelSource,
    /// How relevancy rows are normalised for the text bars and the decoder map (key `N`).
    pub rel_norm: Normalization,
    /// The attention method shows the vision tower's own attention (key `V`), not the
    /// decoder's.
    pub vision: bool,
    /// The vision layer that map shows (the layer keys choose it while it is shown); `None`:
    /// the last one the session holds.
    pub vision_layer: Option<usize>,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            method: Method::Attention,
            layer: 0,
            head: 0,
            agg: Agg::Mean,
            rel_source: RelSource::Combined,
            rel_norm: Normalization::default(),
            vision: false,
            vision_layer: None,
        }
    }
}

impl Selection {
    /// The same selection showing head `head` alone.
    pub fn with_head(self, head: usize) -> Self {
        Self {
            head,
            agg: Agg::Head,
            ..self
        }
    }

    /// The head aggregation as the explain layer spells it.
    pub fn head_agg(&self) -> HeadAgg {
        match self.agg {
            Agg::Head => HeadAgg::Head(self.head),
            Agg::Mean => HeadAgg::Mean,
            Agg::Max => HeadAgg::Max,
        }
    }

    /// The raw-attention map of the current layer and heads, in a model of `layers` layers.
    pub fn attention_id(&self, layers: usize) -> MapId {
        MapId::attention(self.layer, layers, self.head_agg())
    }

    /// The catalogue id of the map the image pane shows, in a model of `layers` layers.
    pub fn map_id(&self, layers: usize) -> MapId {
        match self.method {
            Method::Attention if self.vision => MapId::Vision {
                layers: self.vision_layer.map_or(Layers::Last, Layers::At),
                heads: self.head_agg(),
            },
            Method::Attention => self.attention_id(layers),
            Method::Relevancy => MapId::relevancy(self.rel_source, self.rel_norm),
            Method::Causal => MapId::Causal(match self.agg {
                Agg::Mean => CausalHeads::Sum,
                Agg::Max => CausalHeads::Max,
                Agg::Head => CausalHeads::Head(self.head),
            }),
            Method::Random => MapId::Random,
            Method::Lens => MapId::Lens(self.layer),
        }
    }
}

/// A line for the status bar: information or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The text.
    pub text: String,
    /// Whether it reports a failure.
    pub error: bool,
}

/// A model job (relevancy, faithfulness) running on the job worker.
#[derive(Debug, Clone)]
pub struct PendingJob {
    /// Its id, echoed by the worker's messages.
    pub id: u64,
    /// What it computes.
    pub job: ModelJob,
    /// The current stage ("loading model …", "relevancy of token 3", "faithfulness of token 3").
    pub stage: String,
    /// Fraction of the stage done.
    pub fraction: f64,
    /// Set to cancel it.
    pub cancel: Arc<AtomicBool>,
}

/// A live run: its progress and the tokens streamed so far.
#[derive(Debug, Default, Clone)]
pub struct RunState {
    /// A run is in progress.
    pub active: bool,
    /// The current stage.
    pub stage: String,
    /// Fraction of the stage done.
    pub fraction: f64,
    /// Tokens streamed so far.
    pub tokens: Vec<String>,
    /// Set to cancel the run.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// `v` moved by `step` within `0..n` (0 when `n` is 0).
pub fn clamp_step(v: usize, step: isize, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (v as isize + step).clamp(0, n as isize - 1) as usize
    }
}

/// Input positions of the prompt that are not image features.
pub fn prompt_positions(s: &Session) -> Vec<usize> {
    let image = s.image_range();
    (0..s.num_input()).filter(|p| !image.contains(p)).collect()
}

/// The image region the image pane shows: the session's region at the pane's index (the first
/// when the index is past the session's regions), with where its cells start among every
/// region's cells.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownRegion {
    /// Its index among the session's regions.
    pub index: usize,
    /// How many regions the session has.
    pub count: usize,
    /// Cells of the regions before it: its cell `i` is cell `offset + i` of the session
    /// ([`Session::cell_positions`], the order the catalogue's `cells()` and the attention
    /// views' patch indices use).
    pub offset: usize,
    /// The region.
    pub region: ImageRegion,
}

impl ShownRegion {
    /// The region at `index` of `s` (the first when past them); `None` without regions.
    pub fn of(s: &Session, index: usize) -> Option<ShownRegion> {
        let regions = s.regions();
        let index = if index < regions.len() { index } else { 0 };
        let region = regions.get(index)?.clone();
        Some(ShownRegion {
            index,
            count: regions.len(),
            offset: regions[..index].iter().map(ImageRegion::cells).sum(),
            region,
        })
    }

    /// The session-wide cell indices of the region's cells `cells` (cells past the region are
    /// left out).
    pub fn session_cells(&self, cells: impl IntoIterator<Item = usize>) -> Vec<usize> {
        let n = self.region.cells();
        cells
            .into_iter()
            .filter(|&c| c < n)
            .map(|c| self.offset + c)
            .collect()
    }

    /// The absolute input positions of the region's cells `cells` (cells past the region are
    /// left out).
    pub fn positions(&self, cells: impl IntoIterator<Item = usize>) -> Vec<usize> {
        let all = self.region.cell_positions();
        cells
            .into_iter()
            .filter_map(|c| all.get(c).copied())
            .collect()
    }

    /// The region a deletion of its cells scores (faithfulness): its kind when the session
    /// has several regions; `None` (every cell) when it has one.
    pub fn scored_kind(&self) -> Option<RegionKind> {
        (self.count > 1).then_some(self.region.kind)
    }

    /// `high-res 24×36 · base 24×24`: the region shown, then the others, for titles; empty
    /// when the session has one region.
    pub fn label(s: &Session, index: usize) -> String {
        let regions = s.regions();
        if regions.len() < 2 {
            return String::new();
        }
        let shown = if index < regions.len() { index } else { 0 };
        let name = |r: &ImageRegion| format!("{} {}×{}", region_word(r.kind), r.grid[0], r.grid[1]);
        std::iter::once(shown)
            .chain((0..regions.len()).filter(|&i| i != shown))
            .map(|i| name(&regions[i]))
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

/// The region the app shows first: the stitched high-resolution one when `s` has one
/// (LLaVA-NeXT, OneVision), else the first.
pub fn default_region(s: &Session) -> usize {
    s.regions()
        .iter()
        .position(|r| r.kind == RegionKind::Highres)
        .unwrap_or(0)
}

/// How the app names a region kind: `high-res`, `base`, `image`.
pub fn region_word(kind: RegionKind) -> &'static str {
    match kind {
        RegionKind::Highres => "high-res",
        RegionKind::Base => "base",
        RegionKind::Image => "image",
    }
}
