//! Conversations in the app (issue 18): in a later turn every method's pane splits the shown
//! map's row over the image, this question and the earlier turns (the parts strip); `%` steps
//! the knockout's key set on to the earlier turns and answers; and what is computed on a turn
//! (a knockout, a lens reading) is shown again when `(` `)` come back to it, also after the
//! conversation grows by a turn.

mod common;

use common::{look, press, run_jobs, FakeInterventions};
use crossterm::event::KeyCode;
use lvlmscope::explain::catalogue::{self, MapId, TextPart, TurnParts};
use lvlmscope::explain::knockout::KeyBlock;
use lvlmscope::job::ModelJob;
use lvlmscope::session::synthetic::{second_turn, synthetic_session, SyntheticSpec};
use lvlmscope::session::{Session, TurnInfo};
use lvlmscope::tui::{draw, App, Cmd};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// The tiny synthetic session as the second turn of a conversation (0..3 template, 3..19
/// image, 19..21 first question, 21..23 first answer, 23..25 this question).
fn conversation() -> Session {
    let mut spec = SyntheticSpec::tiny();
    spec.relevancy = true;
    second_turn(synthetic_session(&spec), 2, 2)
}

fn screen(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(170, 50)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    let buf = t.backend().buffer();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn knockout_block(cmds: &[Cmd]) -> KeyBlock {
    match cmds {
        [Cmd::ModelJob(_, ModelJob::Knockout(r))] => r.block.clone(),
        other => panic!("expected one knockout job, got {other:?}"),
    }
}

/// `4` then `r`: the lens of the cursor token at the shown layer, on the fake worker.
fn compute_lens(app: &mut App) {
    press(app, KeyCode::Char('4'));
    let cmds = press(app, KeyCode::Char('r'));
    run_jobs(app, cmds, Box::new(FakeInterventions));
}

fn lens_cached(app: &App) -> bool {
    let s = app.doc.session.as_ref().unwrap();
    let id = MapId::Lens(app.doc.sel.layer);
    catalogue::available(s, app.doc.answer.cursor(), &id)
}

#[test]
fn every_method_shows_the_parts_of_a_later_turn() {
    let s = conversation();
    let mut app = App::with_session(look(), s.clone(), None);
    for key in ['1', '2'] {
        press(&mut app, KeyCode::Char(key));
        let parts = app.doc.view.reliance_parts.expect("parts of a later turn");
        let total: f32 = TextPart::ALL.iter().map(|&p| parts.get(p)).sum();
        assert!((total - 1.0).abs() < 1e-4, "{key}: {parts:?}");
        assert!(
            parts.earlier_answers > 0.0 && parts.image > 0.0,
            "{parts:?}"
        );
    }
    // the attention map's parts are the catalogue's, as shares
    press(&mut app, KeyCode::Char('1'));
    let id = app.map_id();
    let want = catalogue::explain(&s, &[0], &id)
        .unwrap()
        .parts
        .unwrap()
        .shares();
    assert_eq!(app.doc.view.reliance_parts, Some(want));
    let text = screen(&app);
    for part in TextPart::ALL {
        assert!(
            text.contains(&format!("{} {:.2}", part.name(), want.get(part))),
            "{text}"
        );
    }
    // the relevancy word bars tag each word with its part's glyph (as the legend shows it)
    press(&mut app, KeyCode::Char('2'));
    let parts = TurnParts::of(&s);
    let glyph = |p: TextPart| match p {
        TextPart::Image => '█',
        TextPart::Question => '▓',
        TextPart::EarlierAnswers => '▒',
        TextPart::EarlierQuestions => '░',
        TextPart::Answer => '·',
    };
    let text = screen(&app);
    let words = &app
        .doc
        .view
        .rel_text
        .as_ref()
        .expect("relevancy words")
        .words;
    let mut earlier = 0;
    for w in words {
        let part = parts.part(w.positions[0]);
        earlier += usize::from(matches!(
            part,
            TextPart::EarlierAnswers | TextPart::EarlierQuestions
        ));
        let label = format!("{} {}", glyph(part), w.text.trim());
        assert!(text.contains(&label), "{label} in\n{text}");
    }
    assert!(earlier > 0, "{words:?}");
    // the first turn has no earlier turns: no strip
    press(&mut app, KeyCode::Char('('));
    assert_eq!(app.doc.turn_position(), (1, 2));
    assert_eq!(app.doc.view.reliance_parts, None);
    assert!(!screen(&app).contains("earlier answers"));
}

#[test]
fn percent_steps_the_knockout_on_to_the_earlier_turns() {
    let mut app = App::with_session(look(), conversation(), None);
    // from 10 %: 20, 30, 50, then the earlier turns and the earlier answers
    for _ in 0..4 {
        press(&mut app, KeyCode::Char('%'));
    }
    assert!(screen(&app).contains("K knockout → the earlier turns"));
    let cmds = press(&mut app, KeyCode::Char('K'));
    assert_eq!(knockout_block(&cmds), KeyBlock::Earlier);
    run_jobs(&mut app, cmds, Box::new(FakeInterventions));
    assert!(screen(&app).contains("blocked the earlier turns"));
    press(&mut app, KeyCode::Char('%'));
    assert_eq!(
        knockout_block(&press(&mut app, KeyCode::Char('K'))),
        KeyBlock::Answers
    );
    // the first turn has none: K blocks the map's top patches there
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char('('));
    let block = knockout_block(&press(&mut app, KeyCode::Char('K')));
    assert!(matches!(block, KeyBlock::Patches(_)), "{block:?}");
}

#[test]
fn results_stay_with_their_turn() {
    let mut app = App::with_session(look(), conversation(), None);
    // turn 1: a knockout and a lens reading
    press(&mut app, KeyCode::Char('('));
    let cmds = press(&mut app, KeyCode::Char('K'));
    run_jobs(&mut app, cmds, Box::new(FakeInterventions));
    compute_lens(&mut app);
    assert!(lens_cached(&app));
    let knocked = "p 0.8750 → 0.1250 Δp -0.7500";
    assert!(screen(&app).contains(knocked));
    // turn 2 has neither
    press(&mut app, KeyCode::Char(')'));
    assert_eq!(app.doc.turn_position(), (2, 2));
    assert!(!lens_cached(&app));
    assert!(!screen(&app).contains(knocked));
    // back on turn 1 both are there again; the saved conversation is unchanged
    press(&mut app, KeyCode::Char('('));
    assert!(lens_cached(&app));
    assert!(screen(&app).contains(knocked), "{}", screen(&app));
    assert_eq!(app.doc.conversation().unwrap().manifest.lens, Vec::new());
    // turn 2's own lens lives in the conversation itself
    press(&mut app, KeyCode::Char(')'));
    compute_lens(&mut app);
    press(&mut app, KeyCode::Char('('));
    press(&mut app, KeyCode::Char(')'));
    assert!(lens_cached(&app));
    assert_eq!(app.doc.conversation().unwrap().manifest.lens.len(), 1);
}

#[test]
fn a_follow_up_keeps_the_results_of_the_turns_it_shares() {
    let mut app = App::with_session(look(), conversation(), None);
    compute_lens(&mut app);
    press(&mut app, KeyCode::Char('('));
    press(&mut app, KeyCode::Char('1'));
    let cmds = press(&mut app, KeyCode::Char('K'));
    run_jobs(&mut app, cmds, Box::new(FakeInterventions));
    // the conversation grows by a third turn on the same image (as a follow-up brings it)
    let mut talk = app.doc.conversation().unwrap().clone();
    let mut spec = SyntheticSpec::tiny();
    spec.relevancy = true;
    let next = synthetic_session(&spec);
    let info = TurnInfo::single("And then?", next.num_input(), next.num_output());
    talk.push_turn(next, info);
    app.set_session(talk.clone(), None);
    assert_eq!(app.doc.turn_position(), (3, 3));
    // turn 2 was the last one: its lens moved into its turn; turn 1 keeps its knockout
    press(&mut app, KeyCode::Char('('));
    assert_eq!(app.doc.turn_position(), (2, 3));
    assert!(lens_cached(&app));
    press(&mut app, KeyCode::Char('('));
    assert!(screen(&app).contains("p 0.8750 → 0.1250"));
    // another session drops them
    let mut other = talk;
    other.pixel_values.data[0] += 1.0;
    app.set_session(other, None);
    assert!(app.doc.kept.is_empty());
    press(&mut app, KeyCode::Char('('));
    assert!(!lens_cached(&app));
}
