//! Linked mode of the split view: after each key or click on the focused side, the other side
//! follows its token cursor, patch cursor and selection, method, layer, heads, relevancy
//! source and normalisation, and region. Tokens are matched by text: the other answer's token
//! that reads the same (case and spaces aside) nearest the same index, else the same index
//! (clamped to the other answer). Patches follow only when both sides show grids of the same
//! size; layers and heads are clamped to the other model's.

use crate::explain::compare::matching_token;
use crate::session::Session;

use super::super::app::{App, SessionState};
use super::super::state::clamp_step;

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

fn follow(app: &App, other: &mut SessionState) {
    let (Some(mine), Some(theirs)) = (app.doc.session.as_ref(), other.session.as_ref()) else {
        return;
    };
    let (layers, heads) = dims(theirs);
    let mut sel = app.doc.sel;
    sel.layer = clamp_step(sel.layer, 0, layers);
    sel.head = clamp_step(sel.head, 0, heads);
    other.sel = sel;
    let t = matching_token(
        &mine.manifest.tokens.output,
        app.doc.answer.cursor(),
        &theirs.manifest.tokens.output,
    );
    other.answer.set_cursor(t);
    let region = app.doc.image.region();
    if region != other.image.region() && region < theirs.regions().len() {
        other.image.set_region(region);
    }
    let ctx = app.ctx();
    let same_grid = ctx.grid() == super::side::ctx(other, app).grid();
    other.image.follow(&app.doc.image, same_grid);
}

fn dims(s: &Session) -> (usize, usize) {
    (s.manifest.model.text_layers, s.manifest.model.text_heads)
}
