//! Attention knockout in the app (key `K`): block the attention from the selected answer
//! token's position to the patches selected in the image pane, or else to the top k % patches
//! of the map the image pane shows (both counted in the region the pane shows: base or
//! high-res on a LLaVA-NeXT / OneVision session), over a layer range, and re-run the token on
//! the job worker with the session's model (the same [`crate::explain::knockout::knockout`] as
//! `lvlmscope knockout`, on every pipeline). The result line (p before and after, Δp, the
//! greedy token before and after) takes the bottom of the method pane. `%` steps k, and in a
//! conversation's later turn then the earlier turns and the earlier answers as the key set;
//! `L` steps the layer range.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::Frame;

use crate::explain::catalogue;
use crate::explain::knockout::{top_patches, KeyBlock, KnockoutRequest, KnockoutResult, QuerySet};
use crate::job::ModelJob;

use super::super::blocks::{display_token, put};
use super::super::component::Ctx;
use super::super::msg::Effect;
use super::super::state::region_word;

/// The percentages `%` steps through; the first knockout uses [`DEFAULT_PERCENT`].
pub const PERCENTS: [f32; 5] = [5.0, 10.0, 20.0, 30.0, 50.0];

/// The share of a map's patches blocked when no patch is selected.
pub const DEFAULT_PERCENT: f32 = 10.0;

/// The decoder layers a knockout blocks (key `L`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerScope {
    /// Every decoder layer.
    All,
    /// The layer shown (`[` `]`).
    Current,
    /// From the first layer up to the layer shown.
    UpToCurrent,
}

impl LayerScope {
    /// The next scope.
    pub fn next(self) -> LayerScope {
        match self {
            LayerScope::All => LayerScope::Current,
            LayerScope::Current => LayerScope::UpToCurrent,
            LayerScope::UpToCurrent => LayerScope::All,
        }
    }

    /// The layers in a decoder of `layers` layers showing layer `current`.
    pub fn range(self, current: usize, layers: usize) -> RangeInclusive<usize> {
        let last = layers.saturating_sub(1);
        let current = current.min(last);
        match self {
            LayerScope::All => 0..=last,
            LayerScope::Current => current..=current,
            LayerScope::UpToCurrent => 0..=current,
        }
    }

    /// How the method pane names it.
    pub fn label(self) -> &'static str {
        match self {
            LayerScope::All => "all layers",
            LayerScope::Current => "the shown layer",
            LayerScope::UpToCurrent => "layers up to the shown one",
        }
    }
}

/// A knockout the app ran: what was blocked, and what it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct KnockShown {
    /// What the keys were ("3 selected patches", "top 10 % of attention.l1.mean").
    pub keys: String,
    /// The numbers.
    pub result: KnockoutResult,
}

/// The knockout settings and the last result.
#[derive(Debug, Clone, PartialEq)]
pub struct KnockState {
    /// Share of the map's patches blocked when none is selected, in (0, 100].
    pub percent: f32,
    /// The layers blocked.
    pub layers: LayerScope,
    /// The last knockout asked for and what it blocks, in words.
    pub asked: Option<(KnockoutRequest, String)>,
    /// The last knockout done.
    pub last: Option<KnockShown>,
    /// The block is shown (after the first `K`, `%` or `L`).
    pub shown: bool,
    /// In a conversation's later turn, `K` blocks the earlier turns ([`KeyBlock::Earlier`])
    /// or the earlier answers ([`KeyBlock::Answers`]) instead of the map's top patches.
    pub history: Option<KeyBlock>,
}

impl Default for KnockState {
    fn default() -> Self {
        Self {
            percent: DEFAULT_PERCENT,
            layers: LayerScope::All,
            asked: None,
            last: None,
            shown: false,
            history: None,
        }
    }
}

impl KnockState {
    /// `%`: the next percentage; in a turn with earlier turns (`history`), after the last
    /// one the earlier turns, then the earlier answers, then the first percentage again.
    pub fn step_percent(&mut self, history: bool) {
        self.shown = true;
        self.history = match self.history.take() {
            Some(KeyBlock::Earlier) if history => Some(KeyBlock::Answers),
            Some(_) => {
                self.percent = PERCENTS[0];
                return;
            }
            None if history && self.percent == PERCENTS[PERCENTS.len() - 1] => {
                Some(KeyBlock::Earlier)
            }
            None => None,
        };
        if self.history.is_none() {
            let i = PERCENTS.iter().position(|&p| p == self.percent);
            self.percent = PERCENTS[i.map_or(0, |i| (i + 1) % PERCENTS.len())];
        }
    }

    /// What `K` blocks when no patch is selected, in words.
    pub fn target(&self) -> String {
        match &self.history {
            Some(KeyBlock::Answers) => "the earlier answers".into(),
            Some(_) => "the earlier turns".into(),
            None => format!("top {}% of the map", self.percent),
        }
    }

    /// Stores what the knockout `request` changed.
    pub fn store(&mut self, request: &KnockoutRequest, result: KnockoutResult) {
        let keys = match &self.asked {
            Some((asked, keys)) if asked == request => keys.clone(),
            _ => format!("{} key positions", result.keys.len()),
        };
        self.last = Some(KnockShown { keys, result });
    }
}

/// The text of token `id` as the model's tokenizer spells it, when a job brought it.
pub fn word(words: &BTreeMap<u32, String>, id: u32) -> String {
    words
        .get(&id)
        .map_or_else(|| format!("<{id}>"), |w| format!("{:?}", display_token(w)))
}

/// Key `K`: the knockout of the selected token as the image pane's selection and the settings
/// say, as a model job; one sentence instead when it cannot be asked for.
pub fn request(state: &mut KnockState, ctx: &Ctx, out: &mut Vec<Effect>) {
    state.shown = true;
    let Some(s) = ctx.session else {
        out.push(Effect::Notify("no session loaded".into(), true));
        return;
    };
    if s.num_output() == 0 {
        out.push(Effect::Notify(
            "the session has no output tokens, so there is nothing to knock out".into(),
            true,
        ));
        return;
    }
    let token = ctx.token();
    let (layers, _) = ctx.layers_heads();
    // Patches and the map's cells are the shown region's; a session of several regions (base
    // and high-res) names it in the request.
    let shown = ctx.shown_region();
    let region = shown.as_ref().and_then(|r| r.scored_kind());
    let place = region.map_or_else(String::new, |k| format!(" in {}", region_word(k)));
    let (block, keys) = if let Some(chosen) = history_keys(state, ctx) {
        chosen
    } else if ctx.patches.is_empty() {
        let id = ctx.map_id();
        let map = match catalogue::explain(s, &[token], &id) {
            Ok(e) => match (&shown, e.regions.is_empty()) {
                (Some(r), false) => e
                    .regions
                    .get(r.index)
                    .map(|m| m.grid.values.clone())
                    .unwrap_or_default(),
                _ => e.grid.values,
            },
            Err(e) => {
                out.push(Effect::Notify(format!("no map to knock out: {e}"), true));
                return;
            }
        };
        let patches = top_patches(&map, state.percent);
        let keys = format!(
            "top {}% of {id}{place} ({} patches)",
            state.percent,
            patches.len()
        );
        (KeyBlock::Patches(patches), keys)
    } else {
        let n = ctx.patches.len();
        let keys = format!(
            "{n} selected patch{}{place}",
            if n == 1 { "" } else { "es" }
        );
        (
            KeyBlock::Patches(ctx.patches.iter().copied().collect()),
            keys,
        )
    };
    let request = KnockoutRequest {
        token,
        block,
        query: QuerySet::Answer,
        layers: state.layers.range(ctx.sel.layer, layers),
        region,
    };
    state.asked = Some((request.clone(), keys));
    out.push(Effect::StartJob(ModelJob::Knockout(request)));
}

/// The conversation key set `%` chose, with its words, when no patch is selected.
fn history_keys(state: &KnockState, ctx: &Ctx) -> Option<(KeyBlock, String)> {
    let block = state.history.clone().filter(|_| ctx.patches.is_empty())?;
    Some((block, state.target()))
}

/// Lines the block needs: none until it is first used, then the settings line, and three
/// more once a knockout is done.
pub fn height(state: &KnockState) -> u16 {
    match (state.shown, state.last.is_some()) {
        (false, _) => 0,
        (true, false) => 1,
        (true, true) => 4,
    }
}

/// Draws the block: the settings, then the last knockout's token and layers, its keys, and
/// its numbers.
pub fn draw(
    state: &KnockState,
    words: &BTreeMap<u32, String>,
    f: &mut Frame,
    area: Rect,
    ctx: &Ctx,
) {
    let look = ctx.look;
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let dim = Style::default().fg(look.color(look.theme.dim));
    let accent = Style::default().fg(look.color(look.theme.accent));
    let buf = f.buffer_mut();
    let target = if ctx.patches.is_empty() {
        state.target()
    } else {
        format!("{} selected patches", ctx.patches.len())
    };
    let settings = format!("K knockout → {target} · {} (% L)", state.layers.label());
    put(buf, area, area.x, area.y, &settings, dim);
    let Some(k) = &state.last else {
        return;
    };
    let r = &k.result;
    let changed = if r.greedy_original == r.greedy_knockout {
        "unchanged"
    } else {
        "changed"
    };
    let lines = [
        (
            format!(
                "knockout · token {} {} · layers {}-{}",
                r.token,
                word(words, r.token_id),
                r.layers[0],
                r.layers[1]
            ),
            accent,
        ),
        (format!("blocked {}", k.keys), fg),
        (
            format!(
                "p {:.4} → {:.4} Δp {:+.4} · {} → {} ({changed})",
                r.p_original,
                r.p_knockout,
                r.delta_p,
                word(words, r.greedy_original),
                word(words, r.greedy_knockout)
            ),
            fg,
        ),
    ];
    for (i, (line, style)) in lines.iter().enumerate() {
        put(buf, area, area.x, area.y + 1 + i as u16, line, *style);
    }
}

#[cfg(test)]
mod tests {
    use super::{KnockState, PERCENTS};

    #[test]
    fn percent_steps_reach_the_earlier_turns_only_in_a_later_turn() {
        let mut k = KnockState::default();
        let mut seen = Vec::new();
        for _ in 0..PERCENTS.len() + 2 {
            k.step_percent(true);
            seen.push(k.target());
        }
        // from the default 10 %: 20, 30, 50, the earlier turns, the earlier answers, 5, 10
        assert_eq!(seen[2], "top 50% of the map");
        assert_eq!(seen[3], "the earlier turns");
        assert_eq!(seen[4], "the earlier answers");
        assert_eq!(seen[5], "top 5% of the map");
        assert_eq!((k.history.clone(), k.percent), (None, 10.0));
        // without earlier turns the percentages cycle as before
        let mut k = KnockState::default();
        for _ in 0..PERCENTS.len() * 2 {
            k.step_percent(false);
            assert_eq!(k.history, None);
        }
        assert_eq!(k.percent, super::DEFAULT_PERCENT);
    }
}
