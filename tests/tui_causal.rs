//! Key replay on the causal method: the radius selector, the head bars, the
//! possible-d-separation tree and the parameter keys, checked against the session's numbers.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::explain::causal::{explain_head_with_tree, tree_rows};
use lvlmscope::report::causal::default_params;
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{CausalParams, CausalToken};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::{draw, update, App, Cmd, Msg};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn press(app: &mut App, c: char) -> Vec<Cmd> {
    update(
        app,
        Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)),
    )
}

fn text(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An app on the causal method with token 0 explained (the `c` path, run here in place of
/// the worker), with a search radius of 3.
fn explained() -> (App, CausalToken) {
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let s = synthetic_session(&SyntheticSpec::tiny());
    let mut app = App::with_session(look, s, None);
    press(&mut app, '3');
    let cmds = press(&mut app, 'c');
    let params = app.doc.method.causal().params.clone();
    assert_eq!(cmds, vec![Cmd::ComputeCausal(0, params.clone())]);
    let ct =
        lvlmscope::explain::causal::compute_token(app.doc.session.as_ref().unwrap(), 0, &params)
            .unwrap();
    update(&mut app, Msg::CausalDone(0, params, Ok(ct.clone())));
    assert_eq!(app.doc.view.causal.as_ref(), Some(&ct));
    (app, ct)
}

fn union_up_to(ct: &CausalToken, head: usize, r: usize) -> Vec<usize> {
    let h = ct.heads.iter().find(|h| h.head == head).unwrap();
    let mut v: Vec<usize> = h
        .per_radius
        .iter()
        .filter(|(d, _)| **d <= r)
        .flat_map(|(_, p)| p.clone())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn radius_keys_follow_per_radius() {
    let (mut app, ct) = explained();
    let max = app.doc.method.causal().params.search_radius;
    // Pick a head whose tree reaches more than one depth, so the radius matters.
    let deep = ct
        .heads
        .iter()
        .max_by_key(|h| (h.per_radius.len(), std::cmp::Reverse(h.head)))
        .unwrap()
        .head;
    for _ in 0..deep + 1 {
        press(&mut app, '}');
    }
    for _ in 0..(app.doc.sel.head - deep) {
        press(&mut app, '{');
    }
    assert_eq!(app.doc.sel.head, deep);
    assert_eq!(app.doc.view.causal_head, Some(deep));
    let start = app.doc.session.as_ref().unwrap().manifest.image_span[0];
    let grid_len = 16;
    let mut seen = Vec::new();
    for r in (1..=max).rev() {
        assert_eq!(app.doc.view.causal_radius, r);
        let want = union_up_to(&ct, deep, r);
        assert_eq!(app.doc.view.causal_set, want, "radius {r}");
        let marked: Vec<usize> = want
            .iter()
            .filter(|&&p| p >= start && p < start + grid_len)
            .map(|p| p - start)
            .collect();
        assert_eq!(
            app.doc.view.marked.iter().copied().collect::<Vec<_>>(),
            marked,
            "radius {r}"
        );
        let screen = text(&app, 160, 50);
        assert!(screen.contains(&format!("r ≤ {r}: {} positions", want.len())));
        seen.push(want.len());
        press(&mut app, '-');
    }
    // At 1 the key stops; `+` climbs back to the search radius and no further.
    assert_eq!(app.doc.view.causal_radius, 1);
    for _ in 0..max + 2 {
        press(&mut app, '+');
    }
    assert_eq!(app.doc.view.causal_radius, max);
    assert_eq!(app.doc.view.causal_set, union_up_to(&ct, deep, max));
    let h = ct.heads.iter().find(|h| h.head == deep).unwrap();
    assert!(
        h.per_radius.len() >= 2,
        "the chosen head reaches several depths"
    );
    assert!(
        seen.windows(2).all(|w| w[0] >= w[1]),
        "the set grows with r: {seen:?}"
    );
    assert!(
        seen[0] > *seen.last().unwrap(),
        "the radius changes the set: {seen:?}"
    );
}

#[test]
fn head_bars_are_ordered_by_importance() {
    let (mut app, ct) = explained();
    let screen = text(&app, 160, 50);
    let mut order: Vec<_> = ct.heads.iter().collect();
    order.sort_by(|a, b| {
        b.importance
            .total_cmp(&a.importance)
            .then(a.head.cmp(&b.head))
    });
    // Each bar row is labelled `hN`; rows appear top to bottom in importance order.
    let rows: Vec<usize> = order
        .iter()
        .map(|h| {
            let label = format!("h{} ", h.head);
            let value = format!("{:.4}", h.importance as f32);
            screen
                .lines()
                .position(|l| l.contains(&label) && l.contains(&value))
                .unwrap_or_else(|| panic!("bar of head {} drawn", h.head))
        })
        .collect();
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "rows {rows:?}");
    // The most important head is detailed until one is chosen; then `{`/`}` move it.
    assert_eq!(app.doc.view.causal_head, Some(order[0].head));
    press(&mut app, '}');
    assert_eq!(app.doc.view.causal_head, Some(1));
    // The heat map under mean/sum is the summed image weights over heads.
    press(&mut app, 'm');
    assert_eq!(app.doc.sel.agg, lvlmscope::tui::app::Agg::Mean);
    let start = app.doc.session.as_ref().unwrap().manifest.image_span[0];
    let total = lvlmscope::explain::causal::total_image_weights(&ct, (start, 16));
    let map = app.doc.view.map.as_ref().unwrap();
    for (p, w) in total.iter().enumerate() {
        assert!((map.values[p] as f64 - w).abs() < 1e-5, "patch {p}");
    }
}

#[test]
fn tree_rows_are_drawn_indented() {
    let (mut app, ct) = explained();
    press(&mut app, '{');
    let head = app.doc.view.causal_head.unwrap();
    let s = app.doc.session.as_ref().unwrap();
    let params: CausalParams = default_params(s);
    let full = &s.attn_full[&params.layer];
    let n = full.shape[1];
    let [start, len] = s.manifest.image_span;
    let a = &full.data[head * n * n..(head + 1) * n * n];
    let (h, tree) = explain_head_with_tree(a, n, (start, len), ct.target, head, &params);
    assert_eq!(h, ct.heads[head]);
    let rows = tree_rows(&tree);
    let cached = app
        .doc
        .method
        .causal()
        .tree
        .as_ref()
        .expect("tree cached on selection");
    assert_eq!(cached.rows, rows);
    let screen = text(&app, 160, 60);
    assert!(screen.contains("possible-d-separation tree:"));
    let lines: Vec<&str> = screen.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.contains("possible-d-separation tree:"))
        .unwrap();
    for (i, &(depth, p)) in rows.iter().enumerate() {
        let line = lines[first + 1 + i];
        let mark = if depth == 0 { "◆" } else { "└" };
        let want = format!("  {}{mark} ", "  ".repeat(depth));
        assert!(line.contains(&want), "row {i} ({depth}, {p}): {line:?}");
        if !(start..start + len).contains(&p) {
            assert!(line.contains(&format!("@{p}")), "row {i}: {line:?}");
        }
    }
}

#[test]
fn parameter_keys_recompute_with_the_new_parameters() {
    let (mut app, _) = explained();
    let before = app.doc.method.causal().params.clone();
    let cmds = press(&mut app, 'a');
    let want = CausalParams {
        alpha: before.alpha / 2.0,
        ..before.clone()
    };
    assert_eq!(cmds, vec![Cmd::ComputeCausal(0, want.clone())]);
    assert!(text(&app, 160, 50).contains("α 5e-6"));
    let cmds = press(&mut app, 'T');
    let want = CausalParams {
        att_th: before.att_th * 2.0,
        ..want
    };
    assert_eq!(cmds, vec![Cmd::ComputeCausal(0, want.clone())]);
    let cmds = press(&mut app, 'R');
    let want = CausalParams {
        search_radius: before.search_radius + 1,
        ..want
    };
    assert_eq!(cmds, vec![Cmd::ComputeCausal(0, want.clone())]);
    // A result for older parameters is dropped; the current one replaces the stored results.
    let s = app.doc.session.as_ref().cloned().unwrap();
    let stale = lvlmscope::explain::causal::compute_token(&s, 0, &before).unwrap();
    update(&mut app, Msg::CausalDone(0, before.clone(), Ok(stale)));
    assert_eq!(
        app.doc
            .session
            .as_ref()
            .unwrap()
            .manifest
            .causal
            .as_ref()
            .unwrap()
            .params,
        before
    );
    let fresh = lvlmscope::explain::causal::compute_token(&s, 0, &want).unwrap();
    update(
        &mut app,
        Msg::CausalDone(0, want.clone(), Ok(fresh.clone())),
    );
    let stored = app
        .doc
        .session
        .as_ref()
        .unwrap()
        .manifest
        .causal
        .clone()
        .unwrap();
    assert_eq!(stored.params, want);
    assert_eq!(stored.tokens[&0], fresh);
    assert_eq!(app.doc.view.causal.as_ref(), Some(&fresh));
    assert_eq!(app.doc.view.causal_radius, want.search_radius);
    // Same parameters again: nothing to do.
    assert!(press(&mut app, 'c').is_empty());
}
