//! Keys `s` and `e`: saving the session and exporting the map as a PNG (the work runs on the
//! runtime's threads).

use std::path::PathBuf;

use super::super::app::{Agg, App};
use super::Cmd;

/// Key `s`: saves the session where it came from, or to a new file named by the time.
pub(super) fn save(app: &mut App) -> Vec<Cmd> {
    if app.doc.session.is_none() {
        app.notify("nothing to save: no session is loaded", true);
        return Vec::new();
    }
    let path = app.doc.session_path.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("lvlmscope-{secs}.safetensors"))
    });
    app.notify(format!("saving to {}…", path.display()), false);
    vec![Cmd::Save(path)]
}

/// Key `e`: writes the map shown over the image, named by method, token, layer and heads (and
/// the region shown, when the image has several).
pub(super) fn export(app: &mut App) -> Vec<Cmd> {
    if app.doc.view.map.is_none() {
        app.notify("no map to export for this selection", true);
        return Vec::new();
    }
    let tokens = app.selected_tokens();
    let what = match app.doc.sel.agg {
        Agg::Head => format!("h{}", app.doc.sel.head),
        Agg::Mean => "mean".into(),
        Agg::Max => "max".into(),
    };
    let region = match app.ctx().shown_region() {
        Some(r) if r.count > 1 => format!("-{}", r.region.kind.name()),
        _ => String::new(),
    };
    let name = format!(
        "lvlmscope-{}-t{}-l{}-{what}{region}.png",
        app.doc.sel.method.name(),
        tokens.first().copied().unwrap_or(0),
        app.doc.sel.layer
    );
    vec![Cmd::Export(PathBuf::from(name))]
}
