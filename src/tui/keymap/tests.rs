use std::collections::BTreeMap;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
fn press(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

#[test]
fn method_keys_come_before_global_ones() {
    let map = Keymap::default();
    assert_eq!(
        map.action(Family::Relevancy, &press('m')),
        Some(Action::RelevancySource)
    );
    assert_eq!(
        map.action(Family::Attention, &press('m')),
        Some(Action::Heads)
    );
    assert_eq!(
        map.action(Family::Causal, &press('r')),
        Some(Action::Causal(ParamStep::RadiusDown))
    );
    assert_eq!(
        map.action(Family::Relevancy, &press('r')),
        Some(Action::ComputeRelevancy)
    );
    assert_eq!(map.action(Family::Attention, &press('r')), None);
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(map.action(Family::Causal, &ctrl_c), Some(Action::Quit));
    assert_eq!(
        map.action(Family::Causal, &press('c')),
        Some(Action::ComputeCausal)
    );
}

#[test]
fn every_action_has_a_help_row_and_a_name() {
    for a in Action::ALL {
        assert!(HELP.iter().any(|r| r.actions.contains(&a)), "{a:?}");
        assert_eq!(
            Action::ALL.iter().filter(|b| b.name() == a.name()).count(),
            1
        );
    }
}

#[test]
fn overrides_rebind_and_relabel() {
    let overrides = BTreeMap::from([
        ("layer_next".to_string(), vec!["n".to_string()]),
        ("quit".to_string(), vec!["Q".into(), "Ctrl-q".into()]),
    ]);
    let map = Keymap::with_overrides(&overrides).unwrap();
    assert_eq!(
        map.action(Family::Attention, &press('n')),
        Some(Action::LayerNext)
    );
    assert_eq!(map.action(Family::Attention, &press('q')), None);
    let rows = help_rows(&map);
    assert!(rows.contains(&("Q,Ctrl-q".to_string(), "quit")));
    assert!(rows.contains(&("[ n".to_string(), "previous / next layer")));
    assert_eq!(help_rows(&Keymap::default())[0].0, "q, Ctrl-C");
    for (action, key, what) in [("jump", "j", "not an action"), ("quit", "xyz", "not a key")] {
        let o = BTreeMap::from([(action.to_string(), vec![key.to_string()])]);
        let e = Keymap::with_overrides(&o).unwrap_err().to_string();
        assert!(e.contains(what), "{e}");
    }
}

#[test]
fn keys_print_as_they_parse() {
    for s in [
        "q",
        "Ctrl-c",
        "Tab",
        "Shift-Tab",
        "space",
        "F5",
        "←",
        "Esc",
        "<",
    ] {
        let k: Key = s.parse().unwrap();
        assert_eq!(k.to_string(), s);
    }
    assert_eq!("Left".parse::<Key>().unwrap().code, KeyCode::Left);
}
