//! The compare split view (`tui --session A --compare B`, or `B` in the app): the screen splits
//! into an A and a B side, each with its header, answer, prompt, image with its map and method
//! pane; `w` gives the keys to the other side (its frame lit), linked mode (on; `u` toggles)
//! moves the other side's token (matched by text), layer, method and patches with the focused
//! one. The strip between them shows, for the compared tokens, A − B and Spearman ρ when both
//! saw the same pixels — the numbers of `explain::compare` (what `lvlmscope compare` prints) —
//! and every token's image reliance in both. `B` opens a session from a path prompt (read on a
//! worker; a bad file is one sentence), `X` closes the view; a model job asked on B lands in
//! B.

mod common;
mod compare_support;

use common::{look, press, NoModel};
use compare_support::{cursors, open, save, screen, session_b};
use crossterm::event::{KeyCode, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use lvlmscope::explain::compare;
use lvlmscope::explain::knockout::KnockoutResult;
use lvlmscope::job::{JobOutput, ModelJob};
use lvlmscope::session;
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::tui::compare::{draw::layout, open::load, Which};
use lvlmscope::tui::msg::JobDone;
use lvlmscope::tui::state::{Method, Pane};
use lvlmscope::tui::{initial_app, update, App, Cmd, Msg, TuiOptions};
use ratatui::layout::Rect;

fn text(app: &App) -> String {
    screen(app, 170, 48)
}

fn line_with<'a>(screen: &'a str, needle: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} in\n{screen}"))
}

#[test]
fn both_sides_and_the_strip_with_the_compare_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_session(&SyntheticSpec::tiny());
    let mut app = open(dir.path(), &a, &session_b(&a));
    assert!(app.status.notice().is_none(), "{:?}", app.status.notice());
    // saved and loaded as F32: the numbers are those of the sessions on disk
    let (a, b) = (
        session::load(&dir.path().join("a.session")).unwrap(),
        session::load(&dir.path().join("b.session")).unwrap(),
    );
    let s = text(&app);
    assert!(s.contains("A = a.session · keys act here"), "{s}");
    assert!(!s.contains("B = b.session · keys"), "{s}");
    assert!(
        s.contains("B = b.session · What shape is the red object?"),
        "{s}"
    );
    let words: String = a.manifest.prompt.chars().take(12).collect();
    assert!(
        s.contains(&format!("A = a.session · keys act here · {words}")),
        "{s}"
    );
    for pane in [" Answer", " Prompt", " Image", " Attention · heads"] {
        assert_eq!(s.matches(pane).count(), 2, "{pane} twice in\n{s}");
    }
    assert!(s.contains("A − B · linked"), "{s}");
    assert!(s.contains("image share of attention: A │ B"), "{s}");
    // A's "ball" (token 1) is B's token 2: the strip compares that pair
    press(&mut app, KeyCode::Right);
    assert_eq!(cursors(&app), [1, 2]);
    let id = app.map_id();
    let want = compare::compare_pairs(&a, &b, &[[1, 2]], &id).unwrap();
    let rho = want.maps[0].rank_correlation.expect("same image");
    let s = text(&app);
    let pair = line_with(&s, "A 1 \"ball\" · B 2 \"ball\"");
    assert!(pair.contains("A 1 \"ball\""), "{pair}");
    assert!(line_with(&s, "Spearman ρ").contains(&format!("Spearman ρ {rho:.3}")));
    assert!(s.contains("A − B (±"), "{s}");
    // each token's share of attention on the image, A's and B's, in percent
    let share = |side: &compare::Side, t: usize| side.tokens[t].attention.unwrap() * 100.0;
    let row = line_with(&s, &format!("{:>3.0}%│", share(&want.a, 1)));
    assert!(row.contains("ball"), "{row}");
    assert!(
        row.contains(&format!("{:>3.0}%", share(&want.b, 1))),
        "{row}"
    );
    // relevancy, which neither session holds: why there is no map, and the rows still
    press(&mut app, KeyCode::Char('2'));
    let s = text(&app);
    assert!(line_with(&s, "session A: ").contains("relevancy"), "{s}");
    assert!(s.contains("image share of relevancy: A │ B"), "{s}");
    let row = line_with(&s, "—  │");
    assert!(row.contains("The") && row.contains("A  "), "{row}");
}

#[test]
fn linked_sides_move_together_and_unlinked_alone() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_session(&SyntheticSpec::tiny());
    let mut app = open(dir.path(), &a, &session_b(&a));
    // "red" (A 3) is B 1; "is" (A 2) has no match in B: the same index
    for (key, want) in [
        (KeyCode::End, [4, 4]),
        (KeyCode::Left, [3, 1]),
        (KeyCode::Left, [2, 2]),
    ] {
        press(&mut app, key);
        assert_eq!(cursors(&app), want, "{key:?}");
    }
    // method, layer and heads follow
    press(&mut app, KeyCode::Char(']'));
    press(&mut app, KeyCode::Char('}'));
    press(&mut app, KeyCode::Char('3'));
    let other = &app.compare.as_ref().unwrap().other;
    assert_eq!(other.sel, app.doc.sel);
    assert_eq!(app.doc.sel.method, Method::Causal);
    press(&mut app, KeyCode::Char('1'));
    // patches follow on grids of one size
    press(&mut app, KeyCode::Char('p'));
    app.focus = Pane::Image;
    press(&mut app, KeyCode::Right);
    press(&mut app, KeyCode::Char(' '));
    let other = &app.compare.as_ref().unwrap().other;
    assert!(other.image.patch_mode());
    assert_eq!(other.image.patches(), app.doc.image.patches());
    assert_eq!(other.image.patch(), 1);
    press(&mut app, KeyCode::Esc);
    app.focus = Pane::Answer;
    // unlinked: the focused side moves alone
    press(&mut app, KeyCode::Char('u'));
    assert!(text(&app).contains("A − B · unlinked"));
    press(&mut app, KeyCode::Right);
    assert_eq!(cursors(&app), [3, 2]);
    // w: B takes the keys (its frame lit) and moves alone
    press(&mut app, KeyCode::Char('w'));
    let s = text(&app);
    assert!(s.contains("B = b.session · keys act here"), "{s}");
    assert!(!s.contains("A = a.session · keys"), "{s}");
    assert_eq!(
        app.doc.session.as_ref().unwrap().manifest.prompt,
        "What shape is the red object?"
    );
    press(&mut app, KeyCode::Left);
    assert_eq!(cursors(&app), [3, 1]);
    // linked again: A follows B's "red"
    press(&mut app, KeyCode::Char('u'));
    press(&mut app, KeyCode::Home);
    press(&mut app, KeyCode::Right);
    assert_eq!(cursors(&app), [3, 1]);
    // Tab skips the heads × layers pane, which the split view does not draw on a screen of
    // unknown size (tui_compare_grid has the tall one)
    for _ in 0..8 {
        press(&mut app, KeyCode::Tab);
        assert_ne!(app.focus, Pane::Grid);
    }
}

#[test]
fn a_click_gives_the_other_side_the_keys_and_regions_follow() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_session(&SyntheticSpec::anyres_tiny());
    let b = synthetic_session(&SyntheticSpec {
        seed: 8,
        ..SyntheticSpec::anyres_tiny()
    });
    let mut app = open(dir.path(), &a, &b);
    update(&mut app, Msg::Resize(170, 48));
    let s = text(&app);
    assert!(s.contains("w side  u link  X close"), "{s}");
    // b: both sides show the base view (linked)
    let region = |app: &App| {
        let c = app.compare.as_ref().unwrap();
        (app.doc.image.region(), c.other.image.region())
    };
    let grids = |app: &App| {
        let c = app.compare.as_ref().unwrap();
        c.result.as_ref().unwrap().maps.as_ref().unwrap().grids
    };
    let high = region(&app);
    assert_eq!(high.0, high.1);
    assert_eq!(
        grids(&app),
        [[6, 8], [6, 8]],
        "the strip compares the region shown"
    );
    press(&mut app, KeyCode::Char('b'));
    let base = region(&app);
    assert_ne!(base.0, high.0);
    assert_eq!(base.0, base.1);
    assert_eq!(grids(&app), [[4, 4], [4, 4]]);
    // a click in B's image: B takes the keys, its patch cursor moves, A's follows
    let r = layout(Rect::new(0, 0, 170, 48), 0).sides[1].image;
    let (x, y) = (r.x + r.width / 2, r.y + r.height / 2);
    let click = MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: x,
        row: y,
        modifiers: KeyModifiers::NONE,
    };
    update(&mut app, Msg::Mouse(click));
    let c = app.compare.as_ref().unwrap();
    assert_eq!(c.focused, Which::B);
    assert_eq!(app.focus, Pane::Image);
    assert_ne!(app.doc.image.patch(), 0);
    assert_eq!(c.other.image.patch(), app.doc.image.patch());
}

#[test]
fn w_on_a_demo_session_asks_for_its_missing_relevancy_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_session(&SyntheticSpec::tiny());
    let mut b = session_b(&a);
    let hash = lvlmscope::demo::demo_model_hash();
    b.manifest.model.path = dir
        .path()
        .join(format!("demo-{hash}"))
        .display()
        .to_string();
    let mut app = open(dir.path(), &a, &b);
    // A is not the demo: showing relevancy asks for nothing on A; B is: its token's is asked
    // for in the background (linked); once that is cancelled, w asks for it again at once
    let cmds = press(&mut app, KeyCode::Char('2'));
    assert!(
        matches!(cmds.as_slice(), [Cmd::ForSession(_, job)] if matches!(&**job, Cmd::ModelJob(_, ModelJob::Relevancy { tokens }) if tokens == &[0])),
        "{cmds:?}"
    );
    press(&mut app, KeyCode::Esc);
    let cmds = press(&mut app, KeyCode::Char('w'));
    assert!(
        matches!(cmds.as_slice(), [Cmd::ModelJob(_, ModelJob::Relevancy { tokens })] if tokens == &[0]),
        "{cmds:?}"
    );
}

#[test]
fn b_opens_from_a_path_prompt_a_bad_file_is_one_sentence_and_x_closes() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_session(&SyntheticSpec::tiny());
    let pa = save(dir.path(), "a.session", &a);
    let pb = save(dir.path(), "b.session", &session_b(&a));
    let opts = TuiOptions {
        session: Some(pa),
        ..Default::default()
    };
    let mut app = initial_app(&opts, look()).0;
    assert!(app.compare.is_none());
    // Esc cancels the prompt; keys typed into it do nothing else
    press(&mut app, KeyCode::Char('B'));
    assert!(text(&app).contains("Compare with session B"));
    press(&mut app, KeyCode::Char('q'));
    press(&mut app, KeyCode::Esc);
    assert!(!app.quit && !app.open_b.is_open());
    // a missing file: one sentence, the app goes on with A alone
    let type_path = |app: &mut App, p: &std::path::Path| {
        press(app, KeyCode::Char('B'));
        for ch in p.display().to_string().chars() {
            press(app, KeyCode::Char(ch));
        }
        press(app, KeyCode::Enter)
    };
    let missing = dir.path().join("missing.session");
    let cmds = type_path(&mut app, &missing);
    assert_eq!(cmds, [Cmd::LoadCompare(missing.clone())]);
    update(&mut app, load(&missing));
    let notice = app.status.notice().unwrap();
    assert!(notice.error, "{notice:?}");
    assert!(
        notice.text.starts_with("cannot compare with "),
        "{}",
        notice.text
    );
    assert_eq!(notice.text.lines().count(), 1);
    assert!(app.compare.is_none());
    // Tab completes the path as the new-run form does
    press(&mut app, KeyCode::Char('B'));
    for ch in dir.path().join("b.").display().to_string().chars() {
        press(&mut app, KeyCode::Char(ch));
    }
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.open_b.text(), pb.display().to_string());
    press(&mut app, KeyCode::Esc);
    // a good one opens the split view
    let cmds = type_path(&mut app, &pb);
    let [Cmd::LoadCompare(p)] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    update(&mut app, load(p));
    let s = text(&app);
    assert!(s.contains("B = b.session"), "{s}");
    // X with B focused closes the view and leaves A
    press(&mut app, KeyCode::Char('w'));
    press(&mut app, KeyCode::Char('X'));
    assert!(app.compare.is_none());
    assert_eq!(
        app.doc.session.as_ref().unwrap().manifest.prompt,
        a.manifest.prompt
    );
    let s = text(&app);
    assert!(
        !s.contains("B = b.session") && s.contains(" Heads × layers"),
        "{s}"
    );
    press(&mut app, KeyCode::Char('w'));
    assert!(app
        .status
        .notice()
        .unwrap()
        .text
        .starts_with("no compare view"));
}

#[test]
fn a_job_asked_on_b_lands_in_b_after_the_focus_moved() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_session(&SyntheticSpec::tiny());
    let mut app = open(dir.path(), &a, &session_b(&a));
    press(&mut app, KeyCode::Char('w'));
    press(&mut app, KeyCode::Right);
    let cmds = press(&mut app, KeyCode::Char('K'));
    let [Cmd::ModelJob(id, job @ ModelJob::Knockout(r))] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    let request = lvlmscope::tui::jobs::job_request(&app, *id).unwrap();
    assert_eq!(
        request.session.manifest.prompt,
        "What shape is the red object?"
    );
    press(&mut app, KeyCode::Char('w'));
    let result = KnockoutResult {
        token: r.token,
        token_id: 7,
        queries: vec![9],
        keys: vec![3, 4],
        layers: [0, 3],
        p_original: 0.875,
        p_knockout: 0.125,
        delta_p: -0.75,
        greedy_original: 7,
        greedy_knockout: 9,
    };
    update(
        &mut app,
        Msg::JobDone(JobDone {
            id: *id,
            epoch: request.epoch,
            job: job.clone(),
            result: Ok(JobOutput::Knockout {
                result,
                words: vec![(7, "▁red".into()), (9, "▁blue".into())],
            }),
        }),
    );
    let b = &app.compare.as_ref().unwrap().other;
    assert!(b.method.knock().last.is_some());
    assert!(app.doc.method.knock().last.is_none());
    assert!(app.doc.job.is_none());
    let s = text(&app);
    assert!(s.contains("Δp -0.7500"), "{s}");
    // relevancy asked on B goes to the job worker with B's session; its failure is one line
    // (unlinked: B's alone; tui_compare_jobs has both sides')
    press(&mut app, KeyCode::Char('w'));
    press(&mut app, KeyCode::Char('u'));
    press(&mut app, KeyCode::Char('2'));
    let cmds = press(&mut app, KeyCode::Char('r'));
    let [Cmd::ModelJob(id, ModelJob::Relevancy { .. })] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    let request = lvlmscope::tui::jobs::job_request(&app, *id).unwrap();
    assert_eq!(
        request.session.manifest.prompt,
        "What shape is the red object?"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = lvlmscope::tui::worker::spawn_job_worker(Box::new(NoModel), tx);
    assert!(worker.submit(request));
    loop {
        let msg = rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
        let done = matches!(msg, Msg::JobDone(_));
        update(&mut app, msg);
        if done {
            break;
        }
    }
    let notice = app.status.notice().unwrap();
    assert!(
        notice.error && notice.text.contains("no such folder"),
        "{notice:?}"
    );
    assert!(app.doc.job.is_none());
}

#[test]
fn different_images_narrow_terminals_and_a_bad_b_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_session(&SyntheticSpec::tiny());
    let mut b = a.clone();
    for v in b.pixel_values.data.iter_mut() {
        *v = -*v;
    }
    let app = open(dir.path(), &a, &b);
    let s = text(&app);
    assert!(s.contains("different images: no"), "{s}");
    assert!(!s.contains("A − B (±"));
    // below 140 columns the sides stand one above the other
    let s = screen(&app, 120, 40);
    let row = |needle: &str| s.lines().position(|l| l.contains(needle)).unwrap();
    assert!(row("B = b.session") > row("A = a.session") + 10, "{s}");
    for (w, h) in [(40, 12), (60, 16), (90, 24)] {
        screen(&app, w, h);
    }
    let opts = TuiOptions {
        session: Some(dir.path().join("a.session")),
        compare: Some(dir.path().join("missing.session")),
        ..Default::default()
    };
    let (app, _) = initial_app(&opts, look());
    assert!(app.compare.is_none());
    let notice = app.status.notice().unwrap();
    assert!(
        notice.error && notice.text.starts_with("cannot compare with "),
        "{}",
        notice.text
    );
    // without A, B is not opened beside nothing: A's error stays the notice
    let opts = TuiOptions {
        session: Some(dir.path().join("missing.session")),
        compare: Some(dir.path().join("b.session")),
        ..Default::default()
    };
    let (app, _) = initial_app(&opts, look());
    assert!(app.compare.is_none() && app.doc.session.is_none());
    assert!(app.status.notice().unwrap().error);
}
