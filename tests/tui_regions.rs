//! The app on a session with two image regions (a LLaVA-NeXT / OneVision run: base view and
//! stitched high-res grid): it opens on the high-res region, `b` toggles, and everything that
//! reads "the grid" (map values, drawn colours, grid size, patch cursor and selection, clicks,
//! the heads gallery, the causal outline) reads the region shown.

use std::collections::BTreeSet;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use lvlmscope::explain::attention::{self as attn, HeadAgg};
use lvlmscope::explain::catalogue;
use lvlmscope::explain::causal::set_up_to;
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{RegionKind, Session};
use lvlmscope::style::{normalize, ColorMode, Look, Theme};
use lvlmscope::tui::app::draw::hits;
use lvlmscope::tui::state::Pane;
use lvlmscope::tui::{draw, update, App, Cmd, Msg};
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use ratatui::Terminal;

fn look() -> Look {
    Look::new(Theme::dark(), ColorMode::TrueColor)
}

fn anyres() -> App {
    App::with_session(
        look(),
        synthetic_session(&SyntheticSpec::anyres_tiny()),
        None,
    )
}

fn press(app: &mut App, c: char) -> Vec<Cmd> {
    let code = match c {
        '\t' => KeyCode::Tab,
        c => KeyCode::Char(c),
    };
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn keys(app: &mut App, s: &str) {
    for c in s.chars() {
        press(app, c);
    }
}

fn frame(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    t
}

fn text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    let area = buf.area;
    (0..area.height)
        .map(|y| {
            (0..area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn session(app: &App) -> &Session {
    app.doc.session.as_ref().unwrap()
}

/// The map of the selection over region `index`, as the catalogue gives it.
fn catalogue_region(app: &App, index: usize) -> Vec<f32> {
    let s = session(app);
    let id = app.map_id();
    let tokens = app.selected_tokens();
    let e = catalogue::explain(s, &tokens, &id).unwrap();
    e.regions[index].grid.values.clone()
}

#[test]
fn opens_on_the_high_res_region_and_b_toggles() {
    let mut app = anyres();
    let regions = session(&app).regions().into_owned();
    assert_eq!(regions[1].kind, RegionKind::Highres);
    assert_eq!(app.doc.image.region(), 1);
    assert_eq!(app.grid(), [6, 8]);
    let t = text(&frame(&app, 140, 44));
    assert!(t.contains("Image · high-res 6×8 · base 4×4"), "{t}");
    assert!(
        t.contains("grid 6×8)"),
        "the header names the shown grid: {t}"
    );
    assert!(
        t.contains("b base/high-res"),
        "the footer lists the key: {t}"
    );
    press(&mut app, 'b');
    assert_eq!(app.doc.image.region(), 0);
    assert_eq!(app.grid(), [4, 4]);
    let t = text(&frame(&app, 140, 44));
    assert!(t.contains("Image · base 4×4 · high-res 6×8"), "{t}");
    assert!(
        t.contains("grid 4×4)"),
        "the header names the shown grid: {t}"
    );
    let cmds = press(&mut app, 'e');
    let [Cmd::Export(name)] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    assert!(
        name.to_string_lossy().ends_with("-mean-base.png"),
        "{name:?}"
    );
    press(&mut app, 'b');
    assert_eq!(app.doc.image.region(), 1);
    // The key is listed by the image pane and named in the help.
    press(&mut app, '?');
    let t = text(&frame(&app, 140, 50));
    assert!(t.contains("base view / stitched high-res"), "{t}");
}

#[test]
fn a_one_region_session_keeps_its_region_and_says_why() {
    let mut app = App::with_session(look(), synthetic_session(&SyntheticSpec::tiny()), None);
    assert_eq!(app.doc.image.region(), 0);
    let t = text(&frame(&app, 120, 40));
    assert!(!t.contains("high-res"), "{t}");
    assert!(!t.contains("base/high-res"), "{t}");
    press(&mut app, 'b');
    assert_eq!(app.doc.image.region(), 0);
    let notice = app.status.notice().expect("a notice").text.clone();
    assert!(notice.contains("one region"), "{notice}");
}

#[test]
fn the_map_is_the_catalogues_map_of_the_region_shown() {
    let mut app = anyres();
    // attention (mean, one head, max), relevancy (three sources), on two tokens, both regions
    for step in ["", "m", "m", "l", "2", "m", "m", "l l", "1"] {
        keys(&mut app, step);
        for _ in 0..2 {
            press(&mut app, 'b');
            let r = app.doc.image.region();
            let map = app.doc.view.map.as_ref().expect("a map");
            assert_eq!([map.rows, map.cols], app.grid());
            assert_eq!(map.values, catalogue_region(&app, r), "{:?}", app.map_id());
        }
    }
}

#[test]
fn drawn_colours_are_the_region_values() {
    let mut app = anyres();
    press(&mut app, 'o'); // opacity 1: the picture shows the map alone
    assert_eq!(app.doc.image.opacity(), 1.0);
    for _ in 0..2 {
        let (w, h) = (160, 48);
        let t = frame(&app, w, h);
        let geom = hits(&app, Rect::new(0, 0, w, h)).image.expect("a picture");
        assert_eq!([geom.rows, geom.cols], app.grid());
        let values = catalogue_region(&app, app.doc.image.region());
        let range = app.doc.view.range;
        let look = &app.look;
        for (p, &v) in values.iter().enumerate() {
            let (x, y, lower) = geom.patch_center(p);
            let cell = &t.backend().buffer()[(x, y)];
            let got = if lower { cell.bg } else { cell.fg };
            let want = look.color(look.map_rgb(normalize(v, range)));
            assert_eq!(got, want, "cell {p} of region {}", app.doc.image.region());
        }
        press(&mut app, 'b');
    }
}

#[test]
fn selected_patches_are_cells_of_the_region_shown() {
    let mut app = anyres();
    let regions = session(&app).regions().into_owned();
    // focus the image, patch mode, cursor to (1, 2) of the 6×8 grid, select it
    keys(&mut app, "\t\tp");
    assert_eq!(app.focus, Pane::Image);
    keys(&mut app, "jll ");
    assert_eq!(app.doc.image.patch(), 10);
    let ctx = app.ctx();
    let hi = regions[1].cell_positions();
    assert_eq!(app.doc.image.selected_positions(&ctx), vec![hi[10]]);
    // the reverse view reads attention to that position
    let s = session(&app);
    let want = attn::position_attention(s, &[hi[10]], app.doc.sel.layer, HeadAgg::Mean).unwrap();
    assert_eq!(app.doc.view.token_values.as_ref(), Some(&want));
    let heads = attn::patch_head_means(s, &[16 + 10], app.doc.sel.layer).unwrap();
    assert_eq!(app.doc.view.patch_heads, heads);
    // the cursor at the last high-res cell, then the base view: cursor and selection reset
    keys(&mut app, "jjjjjjllllllll");
    assert_eq!(app.doc.image.patch(), 47);
    press(&mut app, 'b');
    assert_eq!(
        (app.doc.image.patch(), app.doc.image.patches().len()),
        (0, 0)
    );
    assert!(app.doc.view.token_values.is_none());
    keys(&mut app, "jjjjjjllllllll ");
    assert_eq!(app.doc.image.patch(), 15, "clamped to the 4×4 grid");
    let base = regions[0].cell_positions();
    assert_eq!(app.doc.image.selected_positions(&app.ctx()), vec![base[15]]);
    let s = session(&app);
    let want = attn::position_attention(s, &[base[15]], app.doc.sel.layer, HeadAgg::Mean).unwrap();
    assert_eq!(app.doc.view.token_values.as_ref(), Some(&want));
    frame(&app, 120, 40);
}

#[test]
fn a_click_selects_the_cell_of_the_region_shown() {
    let mut app = anyres();
    let (w, h) = (160, 48);
    update(&mut app, Msg::Resize(w, h));
    press(&mut app, 'p');
    for region in [1, 0] {
        assert_eq!(app.doc.image.region(), region);
        let geom = hits(&app, Rect::new(0, 0, w, h)).image.expect("a picture");
        let last = geom.rows * geom.cols - 1;
        let (x, y, _) = geom.patch_center(last);
        let click = MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: x,
            row: y,
            modifiers: KeyModifiers::NONE,
        };
        update(&mut app, Msg::Mouse(click));
        assert_eq!(app.doc.image.patch(), last);
        let cells = session(&app).regions()[region].cell_positions();
        assert_eq!(
            app.doc.image.selected_positions(&app.ctx()),
            vec![cells[last]]
        );
        press(&mut app, 'b');
    }
}

#[test]
fn the_heads_gallery_and_causal_outline_follow_the_region() {
    let mut app = anyres();
    let s = session(&app).clone();
    let regions = s.regions().into_owned();
    for (index, region) in regions.iter().enumerate().rev() {
        assert_eq!(app.doc.image.region(), index);
        let want =
            attn::heads_by_region_attention(&s, &app.selected_tokens(), app.doc.sel.layer, region)
                .unwrap();
        assert_eq!(app.doc.view.heads, want);
        assert!(want.iter().all(|(_, _, g)| [g.rows, g.cols] == region.grid));
        press(&mut app, 'b');
    }
    // causal: the outlined cells are the explaining positions inside the region shown
    press(&mut app, '3');
    let cmds = press(&mut app, 'c');
    let params = app.doc.method.causal().params.clone();
    assert_eq!(cmds, vec![Cmd::ComputeCausal(0, params.clone())]);
    let ct = lvlmscope::explain::causal::compute_token(&s, 0, &params).unwrap();
    update(&mut app, Msg::CausalDone(0, params, Ok(ct)));
    keys(&mut app, "+++++");
    let mut outlined = 0;
    for _ in 0..2 {
        let r = app.doc.image.region();
        let cells = regions[r].cell_positions();
        let e = catalogue::explain(session(&app), &[0], &app.map_id()).unwrap();
        assert_eq!(
            app.doc.view.map.as_ref().unwrap().values,
            e.regions[r].grid.values
        );
        let ct = app.doc.view.causal.clone().expect("the causal result");
        let mut want = BTreeSet::new();
        for h in &ct.heads {
            for p in set_up_to(h, app.doc.view.causal_radius) {
                if let Ok(i) = cells.binary_search(&p) {
                    want.insert(i);
                }
            }
        }
        assert_eq!(app.doc.view.marked, want, "region {r}");
        outlined += want.len();
        press(&mut app, 'b');
    }
    assert!(outlined > 0, "some explaining positions are image cells");
    frame(&app, 120, 40);
}

#[test]
fn tiny_terminals_draw_both_regions() {
    let mut app = anyres();
    keys(&mut app, "\t\tp");
    for _ in 0..2 {
        for (w, h) in [(1, 1), (10, 4), (20, 8), (40, 12), (60, 20)] {
            frame(&app, w, h);
        }
        press(&mut app, 'b');
    }
}

#[test]
fn a_large_picture_is_kept_at_most_512_pixels_on_its_longest_side() {
    use lvlmscope::style::overlay::Raster;
    use lvlmscope::style::Rgb;
    use lvlmscope::tui::image::{capped, PICTURE_MAX_SIDE};
    let raster = |width: usize, height: usize| Raster {
        width,
        height,
        pixels: (0..width * height)
            .map(|i| Rgb((i % width * 255 / width) as u8, 0, 0))
            .collect(),
    };
    let wide = capped(raster(2048, 1024));
    assert_eq!((wide.width, wide.height), (PICTURE_MAX_SIDE, 256));
    // a box filter: the left edge stays dark, the right edge bright
    assert!(wide.get(0, 0).0 < 5 && wide.get(511, 0).0 > 250);
    let tall = capped(raster(300, 1500));
    assert_eq!((tall.width, tall.height), (102, 512));
    let small = raster(336, 336);
    assert_eq!(capped(small.clone()), small);
}

#[test]
fn faithfulness_deletes_cells_of_the_region_shown_and_keeps_each_regions_drops() {
    use lvlmscope::job::{JobOutput, ModelJob};
    use lvlmscope::tui::worker::JobDone;
    let mut app = anyres();
    let answer = |app: &mut App, cmds: Vec<Cmd>, drop: f32| -> Option<RegionKind> {
        let [Cmd::ModelJob(id, job)] = cmds.as_slice() else {
            panic!("expected one model job, got {cmds:?}")
        };
        let ModelJob::Faithfulness {
            token,
            maps,
            region,
            ..
        } = job
        else {
            panic!("{job:?}")
        };
        let done = JobDone {
            id: *id,
            epoch: app.doc.epoch,
            job: job.clone(),
            result: Ok(JobOutput::Faithfulness {
                token: *token,
                original: 0.5,
                drops: maps.iter().map(|(n, _)| (n.clone(), drop)).collect(),
                images: maps.len() + 1,
                seconds: 0.1,
            }),
        };
        update(app, Msg::JobDone(done));
        *region
    };
    let cmds = press(&mut app, 'f');
    assert_eq!(answer(&mut app, cmds, 0.25), Some(RegionKind::Highres));
    let drops = |app: &App| -> Vec<Option<f32>> {
        let fv = app.doc.view.faith.as_ref().expect("the block");
        fv.rows.iter().map(|r| r.drop).collect()
    };
    assert!(drops(&app).iter().all(|d| *d == Some(0.25)));
    let t = text(&frame(&app, 160, 48));
    assert!(t.contains("faithfulness of high-res · token 0"), "{t}");
    // the base view: measured again, on base cells; the high-res drops are kept
    let cmds = press(&mut app, 'b');
    assert!(drops(&app).iter().all(Option::is_none));
    assert_eq!(answer(&mut app, cmds, 0.5), Some(RegionKind::Base));
    assert!(drops(&app).iter().all(|d| *d == Some(0.5)));
    let t = text(&frame(&app, 160, 48));
    assert!(t.contains("faithfulness of base · token 0"), "{t}");
    let cmds = press(&mut app, 'b');
    assert!(cmds.is_empty(), "nothing to measure again: {cmds:?}");
    assert!(drops(&app).iter().all(|d| *d == Some(0.25)));
}
