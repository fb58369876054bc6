//! The split view keeps each session's per-token reliance under the session's stamp (its epoch
//! and revision): asking again for the same stamps computes nothing, a changed stamp only its
//! own side, and the kept sides equal what `explain::compare` computes afresh. In the app, a
//! job's result landing on a side changes that side's stamp, and so its reliance.

mod common;
mod compare_support;

use compare_support::{open, session_b};
use crossterm::event::KeyCode;
use lvlmscope::explain::compare;
use lvlmscope::explain::relevancy::RelevancyMaps;
use lvlmscope::job::{JobOutput, ModelJob};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::tui::app::{SessionStamp, TrackedSession};
use lvlmscope::tui::compare::cache::RelianceCache;
use lvlmscope::tui::msg::JobDone;
use lvlmscope::tui::{update, App, Msg};

fn stamp(epoch: u64, revision: u64) -> SessionStamp {
    SessionStamp { epoch, revision }
}

#[test]
fn reliance_is_computed_once_per_session() {
    let a = synthetic_session(&SyntheticSpec::tiny());
    let b = synthetic_session(&SyntheticSpec {
        seed: 8,
        ..SyntheticSpec::tiny()
    });
    let (sa, sb) = (stamp(1, 0), stamp(1 << 32, 0));
    let mut cache = RelianceCache::default();
    assert_eq!(cache.computed(), 0);
    for _ in 0..3 {
        assert_eq!(cache.sides((&a, sa), (&b, sb)), compare::sides(&a, &b));
    }
    assert_eq!(cache.computed(), 2, "one side each for A and B");
    // A gains relevancy rows (as a job stores them, bumping its revision): only A's side is
    // computed again
    let mut a2 = a.clone();
    a2.manifest.relevancy_tokens.push(0);
    let sa2 = stamp(1, 1);
    cache.sides((&a2, sa2), (&b, sb));
    assert_eq!(cache.computed(), 3);
    cache.sides((&a2, sa2), (&b, sb));
    assert_eq!(cache.computed(), 3);
    // another session A (a different answer, a new epoch) is computed once too, and read back
    // equal
    let other = synthetic_session(&SyntheticSpec {
        seed: 3,
        ..SyntheticSpec::tiny()
    });
    let so = stamp(2, 2);
    cache.sides((&other, so), (&b, sb));
    assert_eq!(
        cache.sides((&other, so), (&b, sb)),
        compare::sides(&other, &b)
    );
    assert_eq!(cache.computed(), 4);
    // swapping the sessions between the slots recomputes both: the synthetic sessions share
    // every id and differ only in their attention, as two images under one prompt do
    assert_eq!(other.input_ids, b.input_ids);
    assert_eq!(
        cache.sides((&b, sb), (&other, so)),
        compare::sides(&b, &other)
    );
    assert_eq!(cache.computed(), 6);
}

#[test]
fn every_way_to_change_a_tracked_session_draws_a_new_revision() {
    fn changed(seen: &mut Vec<u64>, t: &TrackedSession) {
        assert!(!seen.contains(&t.revision()), "{} again", t.revision());
        seen.push(t.revision());
    }
    let mut t = TrackedSession::default();
    let mut seen = vec![t.revision()];
    t.set(Some(synthetic_session(&SyntheticSpec::tiny())));
    changed(&mut seen, &t);
    let before = t.revision();
    assert!(t.as_ref().is_some() && t.is_some());
    assert_eq!(t.revision(), before, "reading changes nothing");
    t.as_mut().unwrap().manifest.relevancy_tokens.push(0);
    changed(&mut seen, &t);
    assert!(t.take().is_some() && t.is_none());
    changed(&mut seen, &t);
    // a fresh tracked session given a session never repeats a revision seen
    let mut fresh = TrackedSession::default();
    fresh.set(Some(synthetic_session(&SyntheticSpec::tiny())));
    changed(&mut seen, &fresh);
}

/// How often the split view computed a reliance, and the reliance it shows.
fn reliance(app: &App) -> (usize, [compare::Side; 2]) {
    let c = app.compare.as_ref().expect("split view open");
    let shown = c.result.as_ref().expect("a comparison").reliance.clone();
    (c.reliance.computed(), shown)
}

/// What `explain::compare` computes afresh on the app's two sessions.
fn afresh(app: &App) -> [compare::Side; 2] {
    let c = app.compare.as_ref().expect("split view open");
    let (Some(a), Some(b)) = c.sessions(app) else {
        panic!("two sessions")
    };
    compare::sides(a, b)
}

#[test]
fn a_job_result_on_a_side_invalidates_its_reliance() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_session(&SyntheticSpec::tiny());
    let b = session_b(&a);
    assert_eq!(a.input_ids, b.input_ids, "sessions that share every id");
    let mut app = open(dir.path(), &a, &b);
    let (computed, before) = reliance(&app);
    assert_eq!(before, afresh(&app));
    assert_ne!(before[0], before[1]);
    // moving the token cursor changes no session: nothing is computed again
    common::press(&mut app, KeyCode::Right);
    assert_eq!(reliance(&app), (computed, before.clone()));
    // B's relevancy rows for token 0 land while A has the keys
    let rows = synthetic_session(&SyntheticSpec {
        seed: 8,
        relevancy: true,
        ..SyntheticSpec::tiny()
    });
    let row = |x: &Option<lvlmscope::session::Array>| vec![x.as_ref().unwrap().row(&[0]).to_vec()];
    let maps = RelevancyMaps {
        tokens: vec![0],
        llm: row(&rows.relevancy_llm),
        vit: row(&rows.relevancy_vit),
        combined: row(&rows.relevancy_combined),
        seconds: 0.125,
    };
    let epoch = app.compare.as_ref().unwrap().other.epoch;
    update(
        &mut app,
        Msg::JobDone(JobDone {
            id: 99,
            epoch,
            job: ModelJob::Relevancy { tokens: vec![0] },
            result: Ok(JobOutput::Relevancy(maps)),
        }),
    );
    let c = app.compare.as_ref().unwrap();
    assert_eq!(c.sessions(&app).1.unwrap().manifest.relevancy_tokens, [0]);
    let (again, after) = reliance(&app);
    assert_eq!(again, computed + 1, "B's side alone is computed again");
    assert_eq!(after, afresh(&app));
    assert_eq!(after[0], before[0]);
    assert!(before[1].tokens[0].relevancy.is_none());
    assert!(after[1].tokens[0].relevancy.is_some());
}
