//! The compare pane keeps each session's per-token reliance: moving the token or the map
//! recomputes only the maps, a changed session (new relevancy rows, another answer) its own
//! side, and the kept sides equal what `explain::compare` computes afresh.

use lvlmscope::explain::attention::HeadAgg;
use lvlmscope::explain::catalogue::MapId;
use lvlmscope::explain::compare;
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::tui::compare::ComparePane;

#[test]
fn reliance_is_computed_once_per_session() {
    let a = synthetic_session(&SyntheticSpec::tiny());
    let mut b = synthetic_session(&SyntheticSpec {
        seed: 8,
        ..SyntheticSpec::tiny()
    });
    b.pixel_values = a.pixel_values.clone();
    let layers = a.manifest.model.text_layers;
    let ids = [
        MapId::attention(layers - 1, layers, HeadAgg::Mean),
        MapId::attention(0, layers, HeadAgg::Max),
    ];
    let mut pane = ComparePane::new(b.clone(), "b".into());
    assert_eq!(pane.reliance.computed(), 0);
    for t in 0..a.num_output().min(b.num_output()) {
        for id in &ids {
            pane.refresh(Some(&a), t, id);
            let fresh = compare::compare(&a, &b, &[t], id).unwrap();
            assert_eq!(pane.result.as_ref().unwrap(), &fresh, "token {t} {id}");
        }
    }
    assert_eq!(pane.reliance.computed(), 2, "one side each for A and B");
    // A gains relevancy rows (as a job stores them): only A's side is computed again
    let mut a2 = a.clone();
    a2.manifest.relevancy_tokens.push(0);
    pane.refresh(Some(&a2), 0, &ids[0]);
    assert_eq!(pane.reliance.computed(), 3);
    pane.refresh(Some(&a2), 1, &ids[1]);
    assert_eq!(pane.reliance.computed(), 3);
    // another session A (a different answer) is computed once too
    let other = synthetic_session(&SyntheticSpec {
        seed: 3,
        ..SyntheticSpec::tiny()
    });
    pane.refresh(Some(&other), 0, &ids[0]);
    pane.refresh(Some(&other), 0, &ids[1]);
    assert_eq!(pane.reliance.computed(), 4);
    let fresh = compare::compare(&other, &b, &[0], &ids[1]).unwrap();
    assert_eq!(pane.result.as_ref().unwrap(), &fresh);
}
