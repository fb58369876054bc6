//! The numbers behind the panes for the current selection, computed once per change from a
//! [`ViewInput`] the app gathers from its components. The image pane's map comes from the
//! explanation catalogue ([`crate::explain::catalogue::explain`], docs/design.md, "The
//! catalogue"); this module only gathers what the panes show.

pub mod causal;
pub mod faith;

use std::collections::BTreeSet;

use crate::explain::attention::{
    self as attn, min_max, Grid, HeadAgg, Region, TokenAggregates, Word,
};
use crate::explain::catalogue::{self, CatalogueError, Explanation, Family};
use crate::explain::catalogue::{PartSums, TurnParts};
use crate::explain::relevancy::views::{self as rel_views, TextRelevancy};
use crate::session::{Array, CausalToken, Session};

use super::state::{AttnView, Method, Selection, ShownRegion};
use causal::CausalState;
use faith::{FaithState, FaithView};

/// Most input words listed in the relevancy text bars.
pub const TOP_WORDS: usize = 12;

/// What the view is computed from: the session and what the components hold.
#[derive(Debug, Clone, Copy)]
pub struct ViewInput<'a> {
    /// The session.
    pub session: Option<&'a Session>,
    /// Its per-token aggregates.
    pub aggregates: Option<&'a TokenAggregates>,
    /// Which map is shown.
    pub sel: &'a Selection,
    /// The answer tokens the views use: the selection, or the cursor token.
    pub tokens: &'a [usize],
    /// The answer token under the cursor.
    pub cursor: usize,
    /// At most one answer token is selected (the image map is then that token's map).
    pub one_token: bool,
    /// The selected patches (cells of the shown region), in patch mode.
    pub patches: Option<&'a BTreeSet<usize>>,
    /// Which of the session's image regions the image pane shows (an index; the first when
    /// past the session's regions).
    pub region: usize,
    /// The selected prompt positions.
    pub prompt_selected: &'a BTreeSet<usize>,
    /// The method pane's view under attention.
    pub attn_view: AttnView,
    /// The heads × layers grid covers every answer token (else the selection).
    pub grid_all_tokens: bool,
    /// Causal parameters and radius.
    pub causal: &'a CausalState,
    /// Faithfulness measured so far.
    pub faith: &'a FaithState,
}

/// Derived numbers for the panes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// The answer tokens the views use: the selection, or the cursor token.
    pub tokens: Vec<usize>,
    /// The answer token under the cursor.
    pub cursor: usize,
    /// The map the image pane blends over the image (over the shown region's cells), if the
    /// method has one for the selection.
    pub map: Option<Grid>,
    /// What the map is.
    pub map_title: String,
    /// Why there is no map (a sentence for the image pane).
    pub map_missing: Option<String>,
    /// The map's (min, max), used for colours and the colour bar.
    pub range: (f32, f32),
    /// Patches to outline (the causal explanation's image tokens in the shown region).
    pub marked: BTreeSet<usize>,
    /// A value per answer token to colour the answer pane with (reverse views).
    pub token_values: Option<Vec<f32>>,
    /// What `token_values` measure.
    pub token_values_label: String,
    /// Attention of the selected answer tokens over every position (layer, heads as chosen).
    pub position_values: Vec<f32>,
    /// All heads of the layer with their mean attention to the shown region, sorted (small
    /// multiples).
    pub heads: Vec<(usize, f32, Grid)>,
    /// Image share per answer token at the current layer (mean over heads).
    pub share_layer: Vec<f32>,
    /// Image share per answer token over all layers and heads.
    pub share_all: Vec<f32>,
    /// Answer → prompt-word attention.
    pub words: Vec<(Word, f32)>,
    /// Relevancy: the input words most relevant to the first selected token, and the image's
    /// largest relevancy (rows prepared as the app's normalisation says).
    pub rel_text: Option<TextRelevancy>,
    /// Relevancy: the image share of each answer token's relevancy (`None`: not computed).
    pub reliance: Vec<Option<f32>>,
    /// In a conversation's turn with earlier turns: the shown map's row (any method with a
    /// text part) split over the image, this question, the earlier answers and questions and
    /// this answer so far, as shares (the catalogue's [`Explanation::parts`]).
    pub reliance_parts: Option<PartSums>,
    /// Per head of the layer: attention to the selected patches, averaged over answer tokens.
    pub patch_heads: Vec<f32>,
    /// Heads × layers grid, mean attention to the image (`[L, H]`).
    pub grid_image: Option<Array>,
    /// Heads × layers grid, mean attention to the question (`[L, H]`).
    pub grid_question: Option<Array>,
    /// The causal result of the first selected token, when the session holds one.
    pub causal: Option<CausalToken>,
    /// The head the causal pane details (the selected one, or the most important).
    pub causal_head: Option<usize>,
    /// The causal radius shown (1 up to the search radius).
    pub causal_radius: usize,
    /// The shown head's explaining positions reached within `causal_radius`, ascending.
    pub causal_set: Vec<usize>,
    /// Faithfulness of the maps of the first selected token (shown with `f`, or measured).
    pub faith: Option<FaithView>,
    /// An error from the attention views, if any.
    pub error: Option<String>,
}

impl View {
    /// Computes the view of `input`.
    pub fn compute(input: &ViewInput) -> View {
        let mut v = View {
            tokens: input.tokens.to_vec(),
            cursor: input.cursor,
            ..View::default()
        };
        let Some(s) = input.session else {
            v.map_missing = Some("no session loaded: press n for a new run".into());
            return v;
        };
        let tokens = input.tokens;
        let sel = input.sel;
        let agg = sel.head_agg();
        let l = sel.layer;
        let shown = ShownRegion::of(s, input.region);
        image_map(&mut v, input, s, shown.as_ref());
        if sel.method == Method::Relevancy {
            v.rel_text = rel_views::session_text_relevancy(s, tokens[0], sel.rel_norm, TOP_WORDS);
            v.reliance = rel_views::answer_reliance(s, sel.rel_norm)
                .into_iter()
                .map(|r| r.map(|r| r.image_share()))
                .collect();
        }
        if let Some(m) = &v.map {
            v.range = m.min_max();
        }
        let mut errors = Vec::new();
        let mut keep = |r: Result<(), attn::AttentionError>| {
            if let Err(e) = r {
                errors.push(e.to_string());
            }
        };
        keep(position_values(&mut v, s, tokens, l, agg));
        if let Some(patches) = input.patches.filter(|p| !p.is_empty()) {
            let patches: Vec<usize> = match &shown {
                Some(r) => r.session_cells(patches.iter().copied()),
                None => patches.iter().copied().collect(),
            };
            keep(attn::patch_attention(s, &patches, l, agg).map(|x| {
                v.token_values = Some(x);
                v.token_values_label = format!("attention to {} patch(es)", patches.len());
            }));
            keep(attn::patch_head_means(s, &patches, l).map(|x| v.patch_heads = x));
        } else if !input.prompt_selected.is_empty() {
            let pos: Vec<usize> = input.prompt_selected.iter().copied().collect();
            keep(attn::position_attention(s, &pos, l, agg).map(|x| {
                v.token_values = Some(x);
                v.token_values_label = format!("attention to {} prompt token(s)", pos.len());
            }));
        }
        if sel.method == Method::Attention && input.attn_view == AttnView::Heads {
            let heads = match &shown {
                Some(r) => attn::heads_by_region_attention(s, tokens, l, &r.region),
                None => attn::heads_by_image_attention(s, tokens, l),
            };
            keep(heads.map(|x| v.heads = x));
        }
        if sel.method == Method::Attention && input.attn_view == AttnView::Words {
            keep(attn::word_attention(s, tokens, l, agg).map(|x| v.words = x));
        }
        if let Some(a) = input.aggregates {
            let t_len = s.num_output();
            v.share_layer = (0..t_len).map(|t| a.image_share(t, Some(l))).collect();
            v.share_all = (0..t_len).map(|t| a.image_share(t, None)).collect();
            let scope: Vec<usize> = if input.grid_all_tokens {
                (0..t_len).collect()
            } else {
                tokens.to_vec()
            };
            v.grid_image = Some(a.heads_layers(&scope, Region::Image));
            v.grid_question = Some(a.heads_layers(&scope, Region::Question));
        }
        v.error = errors.into_iter().next();
        v.faith = faith::compute(input, s);
        v
    }
}

/// The image pane's map: the catalogue's map of the selection under the app's map id over the
/// shown region (the causal map explains the first selected token), or the sentence saying
/// what it needs.
fn image_map(v: &mut View, input: &ViewInput, s: &Session, shown: Option<&ShownRegion>) {
    let id = input.sel.map_id(s.manifest.model.text_layers);
    let tokens = match id.family() {
        Family::Causal => &input.tokens[..1],
        _ => input.tokens,
    };
    match catalogue::explain(s, tokens, &id) {
        Ok(e) => {
            if TurnParts::of(s).has_history() {
                v.reliance_parts = e.parts.map(|p| p.shares());
            }
            match id.family() {
                Family::Causal => causal::details(v, input, s, e, shown),
                _ => {
                    v.map = Some(region_grid(&e, shown));
                    v.map_title = e.title;
                }
            }
        }
        Err(e) => v.map_missing = Some(missing(input, s, e)),
    }
}

/// The explanation's map over the shown region (its first region's without one).
fn region_grid(e: &Explanation, shown: Option<&ShownRegion>) -> Grid {
    shown
        .and_then(|r| e.regions.get(r.index))
        .map_or_else(|| e.grid.clone(), |m| m.grid.clone())
}

/// The sentence shown where token `t`'s relevancy is missing.
pub fn relevancy_hint(s: &Session, t: usize) -> String {
    format!(
        "no relevancy for token {t} in this session: press r to compute it with the model {}",
        s.manifest.model.path
    )
}

/// The sentence the image pane shows for a map the session cannot give yet.
fn missing(input: &ViewInput, s: &Session, e: CatalogueError) -> String {
    match e {
        CatalogueError::NoRelevancy(t) => relevancy_hint(s, t),
        CatalogueError::NoTable(name) => format!("no {name} in this session (m: other source)"),
        CatalogueError::NoCausal(t) => {
            let hint = if s.attn_full.contains_key(&input.causal.params.layer) {
                "press c to compute it from attn.full"
            } else {
                "run `lvlmscope run --causal` to compute it"
            };
            format!("no causal explanation for token {t} in this session: {hint}")
        }
        other => other.to_string(),
    }
}

fn position_values(
    v: &mut View,
    s: &Session,
    tokens: &[usize],
    l: usize,
    agg: HeadAgg,
) -> Result<(), attn::AttentionError> {
    let mut acc: Vec<f32> = Vec::new();
    for &t in tokens {
        let row = attn::combined_row(s, t, l, agg)?;
        if acc.is_empty() {
            acc = vec![0.0; row.len()];
        }
        for (a, x) in acc.iter_mut().zip(&row) {
            *a += x / tokens.len() as f32;
        }
    }
    v.position_values = acc;
    Ok(())
}

/// The (min, max) of values at positions outside the image and past the sink at 0.
pub fn text_range(values: &[f32], s: &Session) -> (f32, f32) {
    let image = s.image_range();
    let v: Vec<f32> = values
        .iter()
        .enumerate()
        .filter(|(p, _)| *p > 0 && !image.contains(p))
        .map(|(_, x)| *x)
        .collect();
    min_max(&v)
}
