//! The method pane: under attention, the heads of the layer as small multiples, the image share
//! per answer token, answer → prompt-word attention, or the per-head means for selected patches
//! ([`attention`]); under relevancy, the text bars and the answer's reliance on the image
//! ([`relevancy`]); under causal, the heads by importance and the explaining tokens
//! ([`causal`]). Under every method, the faithfulness block ([`faithfulness`], key `f`) takes
//! the bottom of the pane, the knockout block ([`knockout`], key `K`) above it. Under the
//! logit lens, the token's probability and rank over layers ([`lens`]). A component owning
//! the attention view, the causal parameters, the faithfulness measured so far and the
//! knockout settings and result.

mod attention;
pub mod causal;
pub mod faithfulness;
pub mod knockout;
pub mod lens;
mod parts;
pub mod relevancy;

use std::collections::BTreeMap;

use ratatui::layout::Rect;
use ratatui::Frame;

use crate::explain::catalogue::TurnParts;
use crate::job::ModelJob;
use crate::session::Session;

use super::blocks::bars;
use super::component::{Component, Ctx, Handled};
use super::keymap::Action;
use super::msg::Effect;
use super::state::{clamp_step, Agg, AttnView, Method, Pane};
use super::view::causal::CausalState;
use super::view::faith::FaithState;
use super::view::View;

/// The method pane's own state.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodPane {
    attn_view: AttnView,
    causal: CausalState,
    faith: FaithState,
    knock: knockout::KnockState,
    lens_halted: Option<String>,
    words: BTreeMap<u32, String>,
}

impl Default for MethodPane {
    fn default() -> Self {
        Self {
            attn_view: AttnView::Heads,
            causal: CausalState::default(),
            faith: FaithState::default(),
            knock: knockout::KnockState::default(),
            lens_halted: None,
            words: BTreeMap::new(),
        }
    }
}

/// What the method pane measured on one turn of a conversation (faithfulness, the last
/// knockout, the token words jobs brought), kept while another turn is shown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnMeasures {
    faith: Option<FaithState>,
    knock: Option<knockout::KnockShown>,
    words: BTreeMap<u32, String>,
}

impl MethodPane {
    /// What the pane measured on the session shown.
    pub fn measures(&self) -> TurnMeasures {
        TurnMeasures {
            faith: Some(self.faith.clone()),
            knock: self.knock.last.clone(),
            words: self.words.clone(),
        }
    }

    /// Shows again what was measured on a turn (after [`MethodPane::open_session`] of that
    /// turn); the faithfulness block's settings stay as they are.
    pub fn restore(&mut self, m: TurnMeasures) {
        if let Some(f) = m.faith {
            self.faith.drops = f.drops;
            self.faith.original = f.original;
            self.faith.seconds = f.seconds;
        }
        self.knock.last = m.knock;
        self.words.extend(m.words);
    }

    /// What the pane shows under the attention method (key `v`).
    pub fn attn_view(&self) -> AttnView {
        self.attn_view
    }

    /// The causal parameters, the shown radius and the cached tree.
    pub fn causal(&self) -> &CausalState {
        &self.causal
    }

    /// Faithfulness measured for this session (key `f`).
    pub fn faith(&self) -> &FaithState {
        &self.faith
    }

    /// Faithfulness, to store what a model job measured or why it stopped.
    pub fn faith_mut(&mut self) -> &mut FaithState {
        &mut self.faith
    }

    /// The knockout settings and the last result (key `K`).
    pub fn knock(&self) -> &knockout::KnockState {
        &self.knock
    }

    /// Stores what the knockout `request` changed and the token texts it brought.
    pub fn store_knockout(
        &mut self,
        request: &crate::explain::knockout::KnockoutRequest,
        result: crate::explain::knockout::KnockoutResult,
        words: Vec<(u32, String)>,
    ) {
        self.words.extend(words);
        self.knock.store(request, result);
    }

    /// Keeps the token texts a model job brought (the lens's top tokens).
    pub fn add_words(&mut self, words: Vec<(u32, String)>) {
        self.words.extend(words);
    }

    /// Stops the lens from being computed by itself (on the demo) after a failure or Esc,
    /// until `r`.
    pub fn halt_lens(&mut self, why: String) {
        self.lens_halted = Some(why);
    }

    /// The lens job the shown map needs when the app computes it by itself (the embedded
    /// demo: `auto`), no job runs and no lens job failed.
    pub fn missing_lens_job(&self, ctx: &Ctx, auto: bool) -> Option<ModelJob> {
        if !auto || ctx.sel.method != Method::Lens || ctx.job.is_some() {
            return None;
        }
        if self.lens_halted.is_some() || ctx.view.map.is_some() {
            return None;
        }
        lens::missing_token(ctx).map(|token| ModelJob::Lens {
            token,
            layer: ctx.sel.layer,
        })
    }

    /// The pane for a newly opened session: its causal parameters, nothing measured.
    pub fn open_session(&mut self, s: &Session) {
        self.causal = CausalState::for_session(s);
        self.faith = self.faith.for_new_session();
        self.knock = knockout::KnockState {
            percent: self.knock.percent,
            layers: self.knock.layers,
            shown: self.knock.shown,
            history: self
                .knock
                .history
                .clone()
                .filter(|_| TurnParts::of(s).has_history()),
            ..Default::default()
        };
        self.lens_halted = None;
        self.words.clear();
    }

    /// Recomputes the cached causal tree for the new `view` (after every change).
    pub fn refresh(&mut self, s: Option<&Session>, view: &View) {
        self.causal.refresh_tree(s, view);
    }

    /// The faithfulness job the current token needs, while the block is shown and no job runs.
    pub fn missing_faith_job(&self, ctx: &Ctx) -> Option<ModelJob> {
        faithfulness::missing_job(&self.faith, ctx)
    }

    /// Arrows over the small multiples: the next head in the order they are shown.
    fn walk_heads(&self, step: isize, ctx: &Ctx, out: &mut Vec<Effect>) {
        let order: Vec<usize> = ctx.view.heads.iter().map(|h| h.0).collect();
        if order.is_empty() {
            return;
        }
        let next = match order.iter().position(|&h| h == ctx.sel.head) {
            Some(i) => clamp_step(i, step, order.len()),
            None => 0,
        };
        out.push(Effect::Select(ctx.sel.with_head(order[next])));
    }
}

impl Component for MethodPane {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        draw(self, f, area, ctx);
    }

    fn handle(&mut self, action: Action, ctx: &Ctx, out: &mut Vec<Effect>) -> Handled {
        let focused = ctx.focus == Pane::Method;
        match action {
            Action::AttentionView => self.attn_view = self.attn_view.next(),
            Action::Left | Action::Up if focused => self.walk_heads(-1, ctx, out),
            Action::Right | Action::Down if focused => self.walk_heads(1, ctx, out),
            Action::Select if focused => {
                if self.attn_view == AttnView::Heads && !ctx.view.heads.is_empty() {
                    let mut sel = *ctx.sel;
                    sel.agg = if sel.agg == Agg::Head {
                        Agg::Mean
                    } else {
                        Agg::Head
                    };
                    out.push(Effect::Select(sel));
                }
            }
            Action::ComputeCausal => causal::request(&self.causal, ctx, out),
            Action::RadiusDown | Action::RadiusUp => {
                causal::step_radius(&mut self.causal, action, ctx)
            }
            Action::Causal(step) => causal::step_params(&mut self.causal, step, ctx, out),
            Action::ComputeRelevancy => relevancy::request(ctx, out),
            Action::Faithfulness => faithfulness::toggle(&mut self.faith, ctx, out),
            Action::Knockout => knockout::request(&mut self.knock, ctx, out),
            Action::KnockoutPercent => {
                let history = ctx.session.is_some_and(|s| TurnParts::of(s).has_history());
                self.knock.step_percent(history);
            }
            Action::KnockoutLayers => {
                self.knock.shown = true;
                self.knock.layers = self.knock.layers.next();
            }
            Action::ComputeLens => {
                self.lens_halted = None;
                lens::request(ctx, out);
            }
            _ => return Handled::No,
        }
        Handled::Yes
    }

    fn commands(&self, ctx: &Ctx) -> Vec<Action> {
        let mut out = vec![
            Action::AttentionView,
            Action::Faithfulness,
            Action::Knockout,
            Action::KnockoutPercent,
            Action::KnockoutLayers,
        ];
        if ctx.focus == Pane::Method {
            out.extend([Action::Up, Action::Down, Action::Select]);
        }
        out.extend(
            Action::ALL
                .into_iter()
                .filter(|a| a.scope() == Some(ctx.sel.method)),
        );
        out
    }
}

/// Draws the method pane into `area`.
fn draw(pane: &MethodPane, f: &mut Frame, area: Rect, ctx: &Ctx) {
    let sel = ctx.sel;
    let patches = ctx.patch_mode && !ctx.patches.is_empty();
    let title = match sel.method {
        Method::Attention if ctx.vision_shown().is_some() => {
            let (l, lv, _) = ctx.vision_shown().unwrap_or_default();
            let keys = ctx
                .keymap
                .label(&[Action::LayerPrev, Action::LayerNext], "[ ]");
            format!(
                "Attention · vision tower · layer {l} of 0–{} ({keys} choose)",
                lv.saturating_sub(1)
            )
        }
        Method::Attention if patches => {
            format!(
                "Attention · per-head attention to the patches · layer {}",
                sel.layer
            )
        }
        Method::Attention => match pane.attn_view {
            AttnView::Heads => format!(
                "Attention · heads of layer {} by mean image attention (own scales)",
                sel.layer
            ),
            AttnView::Share => "Attention · share given to the image (layer │ all)".into(),
            AttnView::Words => format!("Attention · answer → prompt words · layer {}", sel.layer),
        },
        Method::Relevancy => relevancy::title(ctx),
        Method::Causal => causal::title(&pane.causal, ctx),
        Method::Random => "Random baseline".into(),
        Method::Lens => format!(
            "Logit lens · layer {} · p(token) after each layer (r computes)",
            sel.layer
        ),
    };
    let block = ctx.frame(Pane::Method, title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.width < 8 || inner.height < 2 || ctx.session.is_none() {
        return;
    }
    let faith_h = faithfulness::height(&pane.faith, ctx).min(inner.height.saturating_sub(3));
    let inner = if faith_h >= 2 {
        let top = inner.height - faith_h;
        let block = Rect::new(inner.x, inner.y + top, inner.width, faith_h);
        faithfulness::draw(&pane.faith, f, block, ctx);
        Rect::new(inner.x, inner.y, inner.width, top)
    } else {
        inner
    };
    let knock_h = knockout::height(&pane.knock).min(inner.height.saturating_sub(2));
    let inner = if knock_h >= 1 {
        let top = inner.height - knock_h;
        let block = Rect::new(inner.x, inner.y + top, inner.width, knock_h);
        knockout::draw(&pane.knock, &pane.words, f, block, ctx);
        Rect::new(inner.x, inner.y, inner.width, top)
    } else {
        inner
    };
    let strip_h = ctx
        .view
        .reliance_parts
        .map_or(0, |s| parts::height(&s, inner.width));
    let inner = match &ctx.view.reliance_parts {
        Some(shares) if inner.height >= strip_h + 3 => {
            let top = inner.height - strip_h;
            let strip = Rect::new(inner.x, inner.y + top, inner.width, strip_h);
            parts::draw(f, ctx, shares, strip);
            Rect::new(inner.x, inner.y, inner.width, top)
        }
        _ => inner,
    };
    match sel.method {
        Method::Attention if patches => {
            let rows: Vec<(String, f32, bool)> = ctx
                .view
                .patch_heads
                .iter()
                .enumerate()
                .map(|(h, v)| (format!("h{h}"), *v, sel.agg == Agg::Head && h == sel.head))
                .collect();
            bars(f, ctx.look, inner, &rows);
        }
        Method::Attention => match pane.attn_view {
            AttnView::Heads => attention::small_multiples(f, ctx, inner),
            AttnView::Share => attention::share(f, ctx, inner),
            AttnView::Words => attention::words(f, ctx, inner, &ctx.view.words),
        },
        Method::Relevancy => relevancy::draw(f, inner, ctx),
        Method::Causal => causal::draw(&pane.causal, f, inner, ctx),
        Method::Lens => lens::draw(&pane.words, f, inner, ctx),
        Method::Random => {}
    }
}
