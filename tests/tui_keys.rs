//! Key replay: each key changes the drawn maps exactly as the session's numbers say. Expected
//! colours are computed here from the raw `attn.gen` values, independently of `explain`.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::Session;
use lvlmscope::style::{normalize, ColorMap, ColorMode, Look, Theme};
use lvlmscope::tui::app::{Agg, Pane};
use lvlmscope::tui::draw::hits;
use lvlmscope::tui::{draw, update, App, Msg};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::Terminal;

fn app() -> App {
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, synthetic_session(&SyntheticSpec::tiny()), None);
    app.doc.image.set_opacity(1.0);
    app
}

fn press(app: &mut App, code: KeyCode) {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn frame(app: &App, w: u16, h: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    t.backend().buffer().clone()
}

/// A whole terminal of `w × h` cells.
fn whole(w: u16, h: u16) -> Rect {
    Rect::new(0, 0, w, h)
}

fn rgb(cmap: ColorMap, x: f32) -> Color {
    let c = cmap.sample(x);
    Color::Rgb(c.0, c.1, c.2)
}

fn min_max(v: &[f32]) -> (f32, f32) {
    v.iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)))
}

/// Raw value of attn.gen[t, l, h, p].
fn raw(s: &Session, t: usize, l: usize, h: usize, p: usize) -> f32 {
    s.attn_gen.as_ref().unwrap().get(&[t, l, h, p])
}

#[derive(Clone, Copy)]
enum Heads {
    One(usize),
    Mean,
    Max,
}

/// The expected image map (per patch), averaged over `tokens`.
fn expected_map(s: &Session, tokens: &[usize], l: usize, heads: Heads) -> Vec<f32> {
    let start = s.manifest.image_span[0];
    let nh = s.manifest.model.text_heads;
    (0..16)
        .map(|p| {
            let per_token = |t: usize| match heads {
                Heads::One(h) => raw(s, t, l, h, start + p),
                Heads::Mean => (0..nh).map(|h| raw(s, t, l, h, start + p)).sum::<f32>() / nh as f32,
                Heads::Max => (0..nh)
                    .map(|h| raw(s, t, l, h, start + p))
                    .fold(f32::MIN, f32::max),
            };
            tokens.iter().map(|&t| per_token(t)).sum::<f32>() / tokens.len() as f32
        })
        .collect()
}

/// Checks every patch centre of the image pane against the colour map of `values`.
fn assert_image(app: &App, values: &[f32]) {
    let buf = frame(app, 120, 40);
    let geom = hits(app, whole(120, 40)).image.expect("image pane drawn");
    let range = min_max(values);
    for (p, v) in values.iter().enumerate() {
        let (x, y, lower) = geom.patch_center(p);
        let cell = &buf[(x, y)];
        let got = if lower { cell.bg } else { cell.fg };
        assert_eq!(
            got,
            rgb(ColorMap::Viridis, normalize(*v, range)),
            "patch {p} at ({x},{y})"
        );
    }
}

#[test]
fn token_layer_head_and_aggregation_keys_redraw_the_map() {
    let mut app = app();
    let s = app.doc.session.as_ref().cloned().unwrap();
    assert_eq!(
        (app.doc.answer.cursor(), app.doc.sel.layer, app.doc.sel.agg),
        (0, 1, Agg::Mean)
    );
    assert_image(&app, &expected_map(&s, &[0], 1, Heads::Mean));
    press(&mut app, KeyCode::Char('l'));
    assert_image(&app, &expected_map(&s, &[1], 1, Heads::Mean));
    press(&mut app, KeyCode::Char(']'));
    assert_image(&app, &expected_map(&s, &[1], 2, Heads::Mean));
    press(&mut app, KeyCode::Char('}'));
    assert_eq!((app.doc.sel.head, app.doc.sel.agg), (1, Agg::Head));
    assert_image(&app, &expected_map(&s, &[1], 2, Heads::One(1)));
    press(&mut app, KeyCode::Char('m'));
    press(&mut app, KeyCode::Char('m'));
    assert_eq!(app.doc.sel.agg, Agg::Max);
    assert_image(&app, &expected_map(&s, &[1], 2, Heads::Max));
    press(&mut app, KeyCode::Char('['));
    press(&mut app, KeyCode::Char('m'));
    press(&mut app, KeyCode::Char('m'));
    assert_image(&app, &expected_map(&s, &[1], 1, Heads::Mean));
}

#[test]
fn selecting_several_tokens_averages_their_maps() {
    let mut app = app();
    let s = app.doc.session.as_ref().cloned().unwrap();
    press(&mut app, KeyCode::Char(' '));
    press(&mut app, KeyCode::Right);
    press(&mut app, KeyCode::Right);
    press(&mut app, KeyCode::Char(' '));
    assert_eq!(app.selected_tokens(), vec![0, 2]);
    assert_image(&app, &expected_map(&s, &[0, 2], 1, Heads::Mean));
    press(&mut app, KeyCode::Char('x'));
    assert_image(&app, &expected_map(&s, &[2], 1, Heads::Mean));
}

#[test]
fn patch_selection_colours_answer_tokens_by_their_attention() {
    let mut app = app();
    let s = app.doc.session.as_ref().cloned().unwrap();
    press(&mut app, KeyCode::Char('p'));
    assert_eq!(app.focus, Pane::Image);
    press(&mut app, KeyCode::Char('l'));
    press(&mut app, KeyCode::Char('j'));
    assert_eq!(app.doc.image.patch(), 5);
    press(&mut app, KeyCode::Char(' '));
    press(&mut app, KeyCode::Char('h'));
    press(&mut app, KeyCode::Char(' '));
    assert_eq!(
        app.doc.image.patches().iter().copied().collect::<Vec<_>>(),
        vec![4, 5]
    );
    let start = s.manifest.image_span[0];
    let per_token: Vec<f32> = (0..5)
        .map(|t| {
            [4, 5]
                .iter()
                .map(|p| (0..4).map(|h| raw(&s, t, 1, h, start + p)).sum::<f32>() / 4.0)
                .sum()
        })
        .collect();
    let buf = frame(&app, 120, 40);
    let range = min_max(&per_token);
    let hits = hits(&app, whole(120, 40)).answer;
    assert_eq!(hits.len(), 5);
    for (r, t) in hits {
        let want = rgb(ColorMap::Viridis, normalize(per_token[t], range));
        assert_eq!(buf[(r.x, r.y)].fg, want, "answer token {t}");
    }
    let heads = &app.doc.view.patch_heads;
    for (h, v) in heads.iter().enumerate() {
        let want: f32 = (0..5)
            .map(|t| {
                [4, 5]
                    .iter()
                    .map(|p| raw(&s, t, 1, h, start + p))
                    .sum::<f32>()
            })
            .sum::<f32>()
            / 5.0;
        assert!((v - want).abs() < 1e-6, "head {h}: {v} vs {want}");
    }
}

#[test]
fn heads_by_layers_grid_shows_mean_image_attention() {
    let mut app = app();
    let s = app.doc.session.as_ref().cloned().unwrap();
    let buf = frame(&app, 120, 40);
    let g = hits(&app, whole(120, 40)).grid.expect("grid drawn");
    let start = s.manifest.image_span[0];
    let mut vals = vec![0.0f32; 16];
    for l in 0..4 {
        for h in 0..4 {
            vals[l * 4 + h] = (0..5)
                .map(|t| (0..16).map(|p| raw(&s, t, l, h, start + p)).sum::<f32>() / 16.0)
                .sum::<f32>()
                / 5.0;
        }
    }
    let range = min_max(&vals);
    for l in 0..4 {
        for h in 0..4 {
            let cell = &buf[(g.x0 + l as u16, g.y0 + h as u16 / 2)];
            let got = if h % 2 == 0 { cell.fg } else { cell.bg };
            let want = normalize(vals[l * 4 + h], range);
            assert_eq!(got, rgb(ColorMap::Viridis, want), "layer {l} head {h}");
        }
    }
    // Moving in the grid pane selects layer and head.
    app.focus = Pane::Grid;
    press(&mut app, KeyCode::Right);
    press(&mut app, KeyCode::Down);
    assert_eq!(
        (app.doc.sel.layer, app.doc.sel.head, app.doc.sel.agg),
        (2, 1, Agg::Head)
    );
}

#[test]
fn mouse_clicks_select_tokens_and_patches() {
    let mut app = app();
    update(&mut app, Msg::Resize(120, 40));
    frame(&app, 120, 40);
    let (r, t) = hits(&app, whole(120, 40)).answer[3];
    let click = |x, y| {
        Msg::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: x,
            row: y,
            modifiers: KeyModifiers::NONE,
        })
    };
    update(&mut app, click(r.x, r.y));
    assert_eq!(app.doc.answer.cursor(), t);
    frame(&app, 120, 40);
    let geom = hits(&app, whole(120, 40)).image.unwrap();
    let (x, y, _) = geom.patch_center(10);
    update(&mut app, click(x, y));
    assert_eq!((app.doc.image.patch(), app.focus), (10, Pane::Image));
}

#[test]
fn every_size_draws_and_small_terminals_get_a_message() {
    let app = app();
    for (w, h) in [
        (200, 60),
        (80, 24),
        (40, 12),
        (41, 13),
        (39, 30),
        (120, 11),
        (20, 5),
    ] {
        let buf = frame(&app, w, h);
        let text: String = buf.content.iter().map(|c| c.symbol()).collect();
        let small = w < 40 || h < 12;
        assert_eq!(text.contains("terminal too small"), small, "{w}x{h}");
    }
    // Degenerate sizes draw without panicking.
    for (w, h) in [(1, 1), (0, 0), (3, 200), (500, 2)] {
        frame(&app, w, h);
    }
}

#[test]
fn quit_and_help_keys() {
    let mut app = app();
    press(&mut app, KeyCode::Char('?'));
    assert!(app.help.open);
    let text: String = frame(&app, 120, 40)
        .content
        .iter()
        .map(|c| c.symbol())
        .collect();
    assert!(text.contains("Keys 1/2 (Space: next page, any other key closes)"));
    press(&mut app, KeyCode::Char('q'));
    assert!(!app.help.open && !app.quit);
    press(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
}

#[test]
fn prompt_selection_colours_answer_tokens_by_attention_to_it() {
    let mut app = app();
    let s = app.doc.session.as_ref().cloned().unwrap();
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.focus, Pane::Prompt);
    press(&mut app, KeyCode::Right);
    assert_eq!(app.doc.prompt.cursor(), 1);
    press(&mut app, KeyCode::Char(' '));
    press(&mut app, KeyCode::Right);
    press(&mut app, KeyCode::Right);
    assert_eq!(
        app.doc.prompt.cursor(),
        19,
        "the cursor skips the image span"
    );
    press(&mut app, KeyCode::Char(' '));
    let want: Vec<f32> = (0..5)
        .map(|t| {
            [1, 19]
                .iter()
                .map(|&p| (0..4).map(|h| raw(&s, t, 1, h, p)).sum::<f32>() / 4.0)
                .sum()
        })
        .collect();
    let got = app
        .doc
        .view
        .token_values
        .clone()
        .expect("answer tokens coloured");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-6);
    }
}

#[test]
fn export_key_writes_the_map_over_the_image() {
    let mut app = app();
    let s = app.doc.session.as_ref().cloned().unwrap();
    let cmds = update(
        &mut app,
        Msg::Key(KeyEvent::new(KeyCode::Char('e'), KeyModifiers::NONE)),
    );
    let [lvlmscope::tui::Cmd::Export(name)] = cmds.as_slice() else {
        panic!("expected one export, got {cmds:?}");
    };
    assert_eq!(name.to_str(), Some("lvlmscope-attention-t0-l1-mean.png"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    lvlmscope::tui::export_png(&app, &path).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (16, 16));
    let values = expected_map(&s, &[0], 1, Heads::Mean);
    let range = min_max(&values);
    // Opacity 1: every pixel is the map colour of its patch.
    for (x, y) in [(0, 0), (5, 9), (15, 15), (12, 2)] {
        let p = (y / 4) * 4 + x / 4;
        let c = ColorMap::Viridis.sample(normalize(values[p], range));
        assert_eq!(img.get_pixel(x as u32, y as u32).0, [c.0, c.1, c.2]);
    }
}

#[test]
fn causal_key_computes_and_stores_the_explanation() {
    let mut app = app();
    press(&mut app, KeyCode::Char('3'));
    assert!(app.doc.view.map.is_none());
    assert!(app
        .doc
        .view
        .map_missing
        .as_deref()
        .is_some_and(|m| m.contains("press c")));
    let cmds = update(
        &mut app,
        Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::NONE)),
    );
    let params = lvlmscope::report::causal::default_params(app.doc.session.as_ref().unwrap());
    assert_eq!(
        cmds,
        vec![lvlmscope::tui::Cmd::ComputeCausal(0, params.clone())]
    );
    let s = app.doc.session.as_ref().cloned().unwrap();
    let ct = lvlmscope::report::causal::causal_for_token(&s, 0).unwrap();
    update(&mut app, Msg::CausalDone(0, params, Ok(ct.clone())));
    assert_eq!(app.doc.view.causal.as_ref(), Some(&ct));
    let stored = &app.doc.session.as_ref().unwrap().manifest.causal;
    assert_eq!(stored.as_ref().unwrap().tokens[&0], ct);
    let map = app.doc.view.map.as_ref().expect("causal map drawn");
    // Sum over heads: each patch is the sum of the heads' image weights for it.
    let start = s.manifest.image_span[0];
    for p in 0..16 {
        let want: f64 = ct
            .heads
            .iter()
            .filter_map(|h| h.image_weights.get(&(start + p)))
            .sum::<f64>();
        assert!((map.values[p] as f64 - want).abs() < 1e-5, "patch {p}");
    }
}

fn screen(app: &App, w: u16, h: u16) -> String {
    let buf = frame(app, w, h);
    (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n")
        .collect()
}

#[test]
fn keys_remapped_in_the_theme_drive_dispatch_help_and_footer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    let text = format!(
        "{}\n[keys]\nlayer_next = \"n\"\nquit = [\"Q\", \"Ctrl-q\"]\n",
        lvlmscope::style::BUILTIN[0].1
    );
    std::fs::write(&path, text).unwrap();
    let theme = Theme::load(path.to_str().unwrap()).unwrap();
    let look = Look::new(theme, ColorMode::TrueColor);
    let mut app = App::with_session(look, synthetic_session(&SyntheticSpec::tiny()), None);
    let layer = app.doc.sel.layer;
    press(&mut app, KeyCode::Char('n'));
    assert_eq!(app.doc.sel.layer, layer + 1, "n is the next layer now");
    assert!(!app.form.is_open(), "n no longer opens the run form");
    press(&mut app, KeyCode::Char('q'));
    assert!(!app.quit, "q is unbound");
    let footer = screen(&app, 160, 40);
    assert!(footer.contains("Q,Ctrl-q quit"), "{footer}");
    assert!(footer.contains("[ n layer"), "{footer}");
    press(&mut app, KeyCode::Char('?'));
    let help = screen(&app, 160, 50);
    assert!(help.contains("[ n  previous / next layer"), "{help}");
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char('Q'));
    assert!(app.quit);
    // A table the keymap cannot read leaves the default keys and says why.
    let text = format!("{}\n[keys]\njump = \"j\"\n", lvlmscope::style::BUILTIN[0].1);
    std::fs::write(&path, text).unwrap();
    let look = Look::new(
        Theme::load(path.to_str().unwrap()).unwrap(),
        ColorMode::TrueColor,
    );
    let app = App::new(look);
    let notice = app.status.notice().cloned().expect("a notice");
    assert!(
        notice.error && notice.text.contains("\"jump\" is not an action"),
        "{}",
        notice.text
    );
}
