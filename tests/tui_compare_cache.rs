//! The split view keeps each session's per-token reliance: asking again for the same sessions
//! computes nothing, a changed session (new relevancy rows, another answer) only its own side,
//! and the kept sides equal what `explain::compare` computes afresh.

use lvlmscope::explain::compare;
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::tui::compare::cache::RelianceCache;

#[test]
fn reliance_is_computed_once_per_session() {
    let a = synthetic_session(&SyntheticSpec::tiny());
    let b = synthetic_session(&SyntheticSpec {
        seed: 8,
        ..SyntheticSpec::tiny()
    });
    let mut cache = RelianceCache::default();
    assert_eq!(cache.computed(), 0);
    for _ in 0..3 {
        assert_eq!(cache.sides(&a, &b), compare::sides(&a, &b));
    }
    assert_eq!(cache.computed(), 2, "one side each for A and B");
    // A gains relevancy rows (as a job stores them): only A's side is computed again
    let mut a2 = a.clone();
    a2.manifest.relevancy_tokens.push(0);
    cache.sides(&a2, &b);
    assert_eq!(cache.computed(), 3);
    cache.sides(&a2, &b);
    assert_eq!(cache.computed(), 3);
    // another session A (a different answer) is computed once too, and read back equal
    let other = synthetic_session(&SyntheticSpec {
        seed: 3,
        ..SyntheticSpec::tiny()
    });
    cache.sides(&other, &b);
    assert_eq!(cache.sides(&other, &b), compare::sides(&other, &b));
    assert_eq!(cache.computed(), 4);
    // swapping the sessions between the slots recomputes both: the synthetic sessions share
    // every id and differ only in their attention, as two images under one prompt do
    assert_eq!(other.input_ids, b.input_ids);
    assert_eq!(cache.sides(&b, &other), compare::sides(&b, &other));
    assert_eq!(cache.computed(), 6);
}
