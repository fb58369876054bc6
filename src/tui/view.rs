//! The numbers behind the panes for the current selection, computed once per change. The image
//! pane's map comes from the explanation catalogue ([`crate::explain::catalogue::explain`],
//! docs/design.md, "The catalogue"); this module only gathers what the panes show.

use std::collections::BTreeSet;

use crate::explain::attention::{
    self as attn, min_max, patch_positions, Grid, HeadAgg, Region, Word,
};
use crate::explain::catalogue::{self, CatalogueError, Explanation, Family};
use crate::session::{Array, CausalToken, Session};

use super::app::{Agg, App, AttnView, Method};
use super::causal;
use crate::explain::relevancy::views::TextRelevancy;

/// Derived numbers for the panes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// The map the image pane blends over the image, if the method has one for the selection.
    pub map: Option<Grid>,
    /// What the map is.
    pub map_title: String,
    /// Why there is no map (a sentence for the image pane).
    pub map_missing: Option<String>,
    /// The map's (min, max), used for colours and the colour bar.
    pub range: (f32, f32),
    /// Patches to outline (the causal explanation's image tokens).
    pub marked: BTreeSet<usize>,
    /// A value per answer token to colour the answer pane with (reverse views).
    pub token_values: Option<Vec<f32>>,
    /// What `token_values` measure.
    pub token_values_label: String,
    /// Attention of the selected answer tokens over every position (layer, heads as chosen).
    pub position_values: Vec<f32>,
    /// All heads of the layer with their mean image attention, sorted (small multiples).
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
    pub faith: Option<super::faithfulness::FaithView>,
    /// An error from the attention views, if any.
    pub error: Option<String>,
}

impl View {
    /// Computes the view of `app`'s selection.
    pub fn compute(app: &App) -> View {
        let mut v = View::default();
        let Some(s) = &app.session else {
            v.map_missing = Some("no session loaded: press n for a new run".into());
            return v;
        };
        let tokens = app.selected_tokens();
        let agg = app.head_agg();
        let l = app.layer;
        image_map(&mut v, app, s, &tokens);
        if app.method == Method::Relevancy {
            super::relevancy::fill(&mut v, app, s, &tokens);
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
        keep(position_values(&mut v, s, &tokens, l, agg));
        if app.patch_mode && !app.patches.is_empty() {
            let patches: Vec<usize> = app.patches.iter().copied().collect();
            keep(attn::patch_attention(s, &patches, l, agg).map(|x| {
                v.token_values = Some(x);
                v.token_values_label = format!("attention to {} patch(es)", patches.len());
            }));
            keep(attn::patch_head_means(s, &patches, l).map(|x| v.patch_heads = x));
        } else if !app.prompt_selected.is_empty() {
            let pos: Vec<usize> = app.prompt_selected.iter().copied().collect();
            keep(attn::position_attention(s, &pos, l, agg).map(|x| {
                v.token_values = Some(x);
                v.token_values_label = format!("attention to {} prompt token(s)", pos.len());
            }));
        }
        if app.method == Method::Attention && app.attn_view == AttnView::Heads {
            keep(attn::heads_by_image_attention(s, &tokens, l).map(|x| v.heads = x));
        }
        if app.method == Method::Attention && app.attn_view == AttnView::Words {
            keep(attn::word_attention(s, &tokens, l, agg).map(|x| v.words = x));
        }
        if let Some(a) = &app.aggregates {
            let t_len = s.num_output();
            v.share_layer = (0..t_len).map(|t| a.image_share(t, Some(l))).collect();
            v.share_all = (0..t_len).map(|t| a.image_share(t, None)).collect();
            let scope: Vec<usize> = if app.grid_all_tokens {
                (0..t_len).collect()
            } else {
                tokens.clone()
            };
            v.grid_image = Some(a.heads_layers(&scope, Region::Image));
            v.grid_question = Some(a.heads_layers(&scope, Region::Question));
        }
        v.error = errors.into_iter().next();
        v.faith = super::faithfulness::compute(app, s);
        v
    }
}

/// The image pane's map: the catalogue's map of the selection under the app's map id (the
/// causal map explains the first selected token), or the sentence saying what it needs.
fn image_map(v: &mut View, app: &App, s: &Session, tokens: &[usize]) {
    let id = app.map_id();
    let tokens = match id.family() {
        Family::Causal => &tokens[..1],
        _ => tokens,
    };
    match catalogue::explain(s, tokens, &id) {
        Ok(e) => match id.family() {
            Family::Causal => causal_details(v, app, s, e),
            _ => {
                v.map_title = e.title;
                v.map = Some(e.grid);
            }
        },
        Err(e) => v.map_missing = Some(missing(app, s, e)),
    }
}

/// The sentence the image pane shows for a map the session cannot give yet.
fn missing(app: &App, s: &Session, e: CatalogueError) -> String {
    match e {
        CatalogueError::NoRelevancy(t) => super::relevancy::missing_hint(s, t),
        CatalogueError::NoTable(name) => format!("no {name} in this session (m: other source)"),
        CatalogueError::NoCausal(t) => {
            let hint = if s.attn_full.contains_key(&app.causal_params.layer) {
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

/// The causal pane's details of the token's result: the shown head, the radius, its explaining
/// set, and the image patches to outline.
fn causal_details(v: &mut View, app: &App, s: &Session, e: Explanation) {
    let Some(ct) = e.causal else { return };
    let max_radius = s
        .manifest
        .causal
        .as_ref()
        .map_or(app.causal_params.search_radius, |c| c.params.search_radius);
    let radius = causal::effective_radius(app.causal_radius, max_radius);
    v.causal_radius = radius;
    if let Some(h) = causal::shown_head(&ct, app.agg, app.head) {
        v.causal_head = Some(h.head);
        v.causal_set = causal::set_up_to(h, radius);
    }
    if let Ok(patches) = patch_positions(s) {
        let heads = ct
            .heads
            .iter()
            .filter(|h| app.agg != Agg::Head || h.head == app.head);
        for h in heads {
            for pos in causal::set_up_to(h, radius) {
                if patches.contains(&pos) {
                    v.marked.insert(pos - patches.start);
                }
            }
        }
    }
    v.map_title = format!("{} · marked: r ≤ {radius}", e.title);
    v.map = Some(e.grid);
    v.causal = Some(ct);
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
