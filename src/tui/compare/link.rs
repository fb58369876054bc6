//! Linked mode of the split view: after each key or click on the focused side, the other side
//! follows its token cursor, patch cursor and selection, method, layer, heads, relevancy
//! source and normalisation, and region. Tokens are matched by text: the other answer's token
//! that reads the same (case and spaces aside) nearest the same index, else the same index
//! (clamped to the other answer). Patches follow only when both sides show grids of the same
//! size; layers and heads are clamped to the other model's.

use crate::session::{piece_text, Session};

use super::super::app::App;
use super::super::state::clamp_step;

/// The token of `to` that side `to` shows when side `from` shows its token `t`: the nearest
/// token (by index, the earlier on a tie) reading the same as `from[t]`, else `t` clamped to
/// `to`'s tokens.
pub fn matching_token(from: &[String], t: usize, to: &[String]) -> usize {
    if to.is_empty() {
        return 0;
    }
    let norm = |s: &String| piece_text(s).trim().to_lowercase();
    let same = from.get(t).map(norm).and_then(|want| {
        (0..to.len())
            .filter(|&i| norm(&to[i]) == want)
            .min_by_key(|&i| i.abs_diff(t))
    });
    same.unwrap_or(t.min(to.len() - 1))
}

/// In linked mode, moves the side not focused to where the focused side is.
pub fn sync(app: &mut App) {
    let Some(mut c) = app.compare.take() else {
        return;
    };
    if c.linked {
        follow(app, &mut c.other);
    }
    app.compare = Some(c);
}

fn follow(app: &App, other: &mut super::side::Side) {
    let (Some(mine), Some(theirs)) = (app.session.as_ref(), other.session.as_ref()) else {
        return;
    };
    let (layers, heads) = dims(theirs);
    let mut sel = app.sel;
    sel.layer = clamp_step(sel.layer, 0, layers);
    sel.head = clamp_step(sel.head, 0, heads);
    other.sel = sel;
    let t = matching_token(
        &mine.manifest.tokens.output,
        app.answer.cursor(),
        &theirs.manifest.tokens.output,
    );
    other.answer.set_cursor(t);
    let region = app.image.region();
    if region != other.image.region() && region < theirs.regions().len() {
        other.image.set_region(region);
    }
    let ctx = app.ctx();
    let same_grid = ctx.grid() == other.ctx(app).grid();
    other.image.follow(&app.image, same_grid);
}

fn dims(s: &Session) -> (usize, usize) {
    (s.manifest.model.text_layers, s.manifest.model.text_heads)
}

#[cfg(test)]
mod tests {
    use super::matching_token;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(|w| format!("▁{w}")).collect()
    }

    #[test]
    fn tokens_match_by_text_nearest_the_index_else_by_index() {
        let a = words("The cat is red");
        let b = words("A red cat sits on the mat");
        assert_eq!(matching_token(&a, 1, &b), 2, "cat");
        assert_eq!(matching_token(&a, 3, &b), 1, "red");
        assert_eq!(matching_token(&a, 0, &b), 5, "the, case aside");
        assert_eq!(matching_token(&a, 2, &b), 2, "no 'is' in B: the same index");
        let short = words("Red");
        assert_eq!(matching_token(&a, 2, &short), 0, "clamped");
        assert_eq!(matching_token(&a, 2, &[]), 0);
        let twice = words("red and red");
        assert_eq!(matching_token(&a, 3, &twice), 2, "the nearer of two");
    }
}
