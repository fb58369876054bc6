//! The embedded demo's first impression: switching to relevancy or causal asks for the
//! selected token's result at once (it takes under 0.1 s there); other sessions wait for `r`/`c`.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::explain::causal::CausalParams;
use lvlmscope::job::ModelJob;
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::{update, App, Cmd, Msg};

fn open(path: &str) -> App {
    let mut s = synthetic_session(&SyntheticSpec::tiny());
    s.manifest.model.path = path.to_string();
    App::with_session(Look::new(Theme::dark(), ColorMode::TrueColor), s, None)
}

fn press(app: &mut App, c: char) -> Vec<Cmd> {
    update(
        app,
        Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)),
    )
}

#[test]
fn the_demo_computes_relevancy_and_causal_on_switching() {
    let demo = format!(
        "/cache/lvlmscope/demo-{}",
        lvlmscope::demo::demo_model_hash()
    );
    let mut app = open(&demo);
    let cmds = press(&mut app, '3');
    let params = CausalParams::for_session(app.doc.session.as_ref().unwrap());
    assert_eq!(cmds, vec![Cmd::ComputeCausal(0, params)]);
    let cmds = press(&mut app, '2');
    assert!(
        matches!(
            cmds.as_slice(),
            [Cmd::ModelJob(_, ModelJob::Relevancy { tokens })] if tokens == &[0]
        ),
        "{cmds:?}"
    );
    // Another model's session waits for the key.
    let mut other = open("/models/llava-1.5-7b-hf");
    assert!(press(&mut other, '3').is_empty());
    assert!(press(&mut other, '2').is_empty());
    assert!(other
        .doc
        .view
        .map_missing
        .as_deref()
        .is_some_and(|m| m.contains("press r")));
}
