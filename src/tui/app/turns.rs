//! What the app computed on each turn of a conversation, kept while another turn is shown:
//! an earlier turn's session with its relevancy, causal and lens results, and the method
//! pane's measurements (faithfulness, the last knockout). The last turn's own results live in
//! the conversation itself. `s` saves the sessions' results (relevancy rows, causal and lens)
//! into the file's per-turn fields ([`App::saved_conversation`]), so a reopened file shows
//! them again; the method pane's measurements stay in memory.

use std::collections::BTreeMap;

use crate::session::Session;

use super::super::method::TurnMeasures;
use super::App;

/// What the app computed on one turn.
#[derive(Debug, Clone, Default)]
pub struct KeptTurn {
    /// An earlier turn's session with what was computed on it; `None` for the conversation's
    /// last turn, whose results the conversation holds.
    pub session: Option<Session>,
    /// The method pane's measurements on the turn.
    pub measures: TurnMeasures,
}

/// Every turn's kept results, by 0-based turn.
pub type KeptTurns = BTreeMap<usize, KeptTurn>;

impl App {
    /// The conversation as `s` saves it: the whole conversation with the results computed on
    /// its other turns (those kept, and the earlier turn shown) stored in their turns' fields
    /// (`Session::set_turn_results`); `None` without a session.
    pub fn saved_conversation(&self) -> Option<Session> {
        let mut full = self.doc.conversation()?.clone();
        let kept = self
            .doc
            .kept
            .iter()
            .filter_map(|(&k, t)| Some((k, t.session.as_ref()?)));
        let shown = self
            .doc
            .talk
            .as_ref()
            .and(self.doc.session.as_ref())
            .map(|s| (s.num_turns() - 1, s));
        for (k, turn) in kept.chain(shown) {
            full.set_turn_results(k, turn);
        }
        Some(full)
    }

    /// Takes the shown conversation out of the app: the whole conversation, the shown turn's
    /// index and what was computed on that turn; `None` without a session.
    pub(super) fn take_turns(&mut self) -> Option<(Session, usize, KeptTurn)> {
        let measures = self.doc.method.measures();
        let (full, turn) = match self.doc.talk.take() {
            Some(full) => (full, self.doc.session.take()),
            None => (self.doc.session.take()?, None),
        };
        let k = turn.as_ref().unwrap_or(&full).num_turns() - 1;
        let kept = KeptTurn {
            session: turn,
            measures,
        };
        Some((full, k, kept))
    }
}

/// The kept turns that still hold for `new` after `old` (the conversation shown before, its
/// shown turn and what was computed on it): a turn of `new` other than its last whose ids,
/// image and model are the ones its results were computed on keeps them (the previous last
/// turn's results move from the old conversation into that turn's session); the rest go.
pub(super) fn carry(
    mut kept: KeptTurns,
    old: Option<(Session, usize, KeptTurn)>,
    new: &Session,
) -> KeptTurns {
    let Some((old, shown, entry)) = old else {
        return KeptTurns::new();
    };
    kept.insert(shown, entry);
    if old.pixel_values != new.pixel_values || old.manifest.model.path != new.manifest.model.path {
        return KeptTurns::new();
    }
    let last = new.num_turns() - 1;
    kept.into_iter()
        .filter(|&(k, _)| k < last)
        .filter_map(|(k, mut t)| {
            let ids = (&new.turns[k].input_ids, &new.turns[k].output_ids);
            let session = match t.session.take() {
                Some(s) => (ids == (&s.input_ids, &s.output_ids)).then_some(s)?,
                None if ids == (&old.input_ids, &old.output_ids) => {
                    let mut s = new.turn(k)?.into_owned();
                    s.set_turn_results(k, &old);
                    s
                }
                None => return None,
            };
            t.session = Some(session);
            Some((k, t))
        })
        .collect()
}
