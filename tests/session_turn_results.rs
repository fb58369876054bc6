//! Explanations of an earlier turn saved in the session file (issue 18): relevancy rows
//! (`turn.{k}.relevancy.*`), causal and lens results (the manifest's turn entry) round-trip
//! bit-equal and come back through `Session::turn`; the file's standard fields stay the last
//! turn's; corrupted or lying per-turn results are refused in one sentence.

use std::collections::{BTreeMap, HashMap};

use lvlmscope::explain::lens::{Lens, LensPoint};
use lvlmscope::session::synthetic::{second_turn, synthetic_session, SyntheticSpec};
use lvlmscope::session::{
    self, Array, AttentionDtype, CausalHead, CausalParams, CausalResults, CausalToken, Session,
    SessionError,
};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// A two-turn conversation (the tiny synthetic session as turn 2) whose turn 1 holds relevancy
/// rows for both its answer tokens, a causal result and a lens reading.
fn explained() -> Session {
    let mut spec = SyntheticSpec::tiny();
    spec.relevancy = true;
    let mut s = second_turn(synthetic_session(&spec), 2, 2);
    let mut first = s.turn(0).unwrap().into_owned();
    let (t, positions, cells) = (
        first.num_output(),
        first.num_positions(),
        first.cell_positions().len(),
    );
    let filled = |shape: &[usize], seed: f32| {
        let mut a = Array::zeros(shape);
        for (i, v) in a.data.iter_mut().enumerate() {
            *v = ((i as f32 + seed) * 0.618_034).fract() / 3.0 + 1e-7 * i as f32;
        }
        a
    };
    first.relevancy_llm = Some(filled(&[t, positions], 0.1));
    first.relevancy_vit = Some(filled(&[t, cells], 0.2));
    first.relevancy_combined = Some(filled(&[t, cells], 0.3));
    first.manifest.relevancy_tokens = (0..t).collect();
    let head = CausalHead {
        head: 1,
        nodes: vec![3, 4, positions - 1],
        explanation: vec![3, 4],
        per_radius: BTreeMap::from([(1, vec![3]), (2, vec![4])]),
        importance: 0.1 + 0.2,
        image_weights: BTreeMap::from([(3, 1.0 / 3.0), (4, 0.7)]),
    };
    first.manifest.causal = Some(CausalResults {
        params: CausalParams::default(),
        tokens: BTreeMap::from([(
            1,
            CausalToken {
                target: first.query_position(1),
                heads: vec![head],
            },
        )]),
    });
    first.manifest.lens = vec![Lens {
        token: 0,
        token_id: first.output_ids[0] as u32,
        position: first.query_position(0),
        curve: vec![LensPoint {
            layer: 0,
            prob: 0.123_456_79,
            rank: 2,
            top: 5,
        }],
        layer: 0,
        grid: first.manifest.model.image_grid,
        map: (0..cells).map(|i| i as f32 / 7.0).collect(),
        top_ids: vec![5; cells],
        top_probs: vec![0.3; cells],
    }];
    assert!(s.set_turn_results(0, &first));
    s
}

fn saved(s: &Session, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("talk.session");
    session::save(s, &path, AttentionDtype::F16).unwrap();
    path
}

fn refused(path: &std::path::Path) -> String {
    let err = session::load(path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SessionError::Schema { .. }), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
    msg
}

#[test]
fn an_earlier_turns_results_round_trip_bit_equal() {
    let dir = tempfile::tempdir().unwrap();
    let s = explained();
    let back = session::load(&saved(&s, dir.path())).unwrap();
    let (want, got) = (s.turn(0).unwrap(), back.turn(0).unwrap());
    for (a, b) in [
        (&want.relevancy_llm, &got.relevancy_llm),
        (&want.relevancy_vit, &got.relevancy_vit),
        (&want.relevancy_combined, &got.relevancy_combined),
    ] {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        assert_eq!(a.shape, b.shape);
        let bits = |x: &Array| x.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b));
    }
    assert_eq!(got.manifest.relevancy_tokens, vec![0, 1]);
    assert_eq!(got.manifest.causal, want.manifest.causal);
    assert_eq!(got.manifest.lens, want.manifest.lens);
    // the last turn keeps its own results; turn 1's are not the last turn's
    assert_eq!(back.relevancy_llm, s.relevancy_llm);
    assert_eq!(back.manifest.relevancy_tokens, s.manifest.relevancy_tokens);
    assert_ne!(got.relevancy_llm, back.relevancy_llm);
    // and every view reads turn 1's rows: the catalogue has its relevancy
    let id = lvlmscope::explain::catalogue::MapId::relevancy(
        lvlmscope::explain::catalogue::RelevancySource::Combined,
        lvlmscope::explain::relevancy::views::Normalization::SelfRemoved,
    );
    assert!(lvlmscope::explain::catalogue::available(&got, 1, &id));
}

#[test]
fn the_standard_fields_stay_the_last_turns() {
    let dir = tempfile::tempdir().unwrap();
    let with = explained();
    let mut without = with.clone();
    let plain = without.turn(0).unwrap().into_owned();
    let mut bare = plain.clone();
    bare.relevancy_llm = None;
    bare.relevancy_vit = None;
    bare.relevancy_combined = None;
    bare.manifest.relevancy_tokens.clear();
    bare.manifest.causal = None;
    bare.manifest.lens.clear();
    assert!(without.set_turn_results(0, &bare));
    let names = |s: &Session| {
        let bytes = std::fs::read(saved(s, dir.path())).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        names
    };
    let (a, b) = (names(&with), names(&without));
    let added: Vec<&String> = a.iter().filter(|n| !b.contains(n)).collect();
    assert_eq!(
        added,
        [
            "turn.0.relevancy.combined",
            "turn.0.relevancy.llm",
            "turn.0.relevancy.vit"
        ]
    );
    assert!(b.iter().all(|n| a.contains(n)));
    // only the turn entry grows; the last turn's fields are the same
    let (x, y) = (
        session::load(&saved(&with, dir.path())).unwrap(),
        session::load(&saved(&without, dir.path())).unwrap(),
    );
    assert_ne!(x, y);
    let strip = |mut s: Session| {
        s.turns.clear();
        s.manifest.turns.clear();
        s
    };
    assert_eq!(strip(x), strip(y));
    // a turn given back with other ids is not stored
    let mut other = plain;
    other.output_ids[0] += 1;
    assert!(!without.set_turn_results(0, &other));
}

/// Rewrites one tensor of a session file (`None` drops it), keeping the manifest.
fn rewrite(path: &std::path::Path, name: &str, tensor: Option<(Dtype, Vec<usize>, Vec<u8>)>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let metadata: HashMap<String, String> = meta.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    match tensor {
        Some(t) => out.insert(name.to_string(), t),
        None => out.remove(name),
    };
    let views: Vec<(String, TensorView<'_>)> = out
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

#[test]
fn corrupted_per_turn_tensors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = explained();
    let path = saved(&s, dir.path());
    let [t, width] = [s.turns[0].output_ids.len(), s.turns[0].input_ids.len() + 1];
    // a table one column short of turn 1's positions
    let short = vec![0u8; t * (width - 1) * 4];
    rewrite(
        &path,
        "turn.0.relevancy.llm",
        Some((Dtype::F32, vec![t, width - 1], short)),
    );
    let msg = refused(&path);
    assert!(msg.contains("turn 1: relevancy.llm has shape"), "{msg}");
    // integers where floats belong
    let path = saved(&s, dir.path());
    let cells = s.turns[0].relevancy_vit.as_ref().unwrap().shape[1];
    rewrite(
        &path,
        "turn.0.relevancy.vit",
        Some((Dtype::I64, vec![t, cells], vec![0u8; t * cells * 8])),
    );
    assert!(refused(&path).contains("tensor turn.0.relevancy.vit"));
    // every table of turn 1 gone while its entry still names rows
    let path = saved(&s, dir.path());
    for name in ["llm", "vit", "combined"] {
        rewrite(&path, &format!("turn.0.relevancy.{name}"), None);
    }
    let msg = refused(&path);
    assert!(
        msg.contains(
            "turn 1: its relevancy_tokens name 2 answer tokens, but it holds no relevancy table"
        ),
        "{msg}"
    );
    // rows for a turn the manifest does not list
    let path = saved(&s, dir.path());
    rewrite(
        &path,
        "turn.1.relevancy.llm",
        Some((Dtype::F32, vec![1], vec![0u8; 4])),
    );
    assert!(refused(&path).contains("belongs to no earlier turn"));
}

#[test]
fn lying_turn_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // turn 1 claims rows of an answer token it does not have
    let mut s = explained();
    s.manifest.turns[0].relevancy_tokens.push(7);
    let msg = refused(&saved(&s, dir.path()));
    assert!(
        msg.contains("turn 1: its relevancy_tokens results name answer token 7"),
        "{msg}"
    );
    let mut s = explained();
    s.manifest.turns[0].lens[0].token = 99;
    let msg = refused(&saved(&s, dir.path()));
    assert!(msg.contains("lens results name answer token 99"), "{msg}");
    let mut s = explained();
    let causal = s.manifest.turns[0].causal.as_mut().unwrap();
    let one = causal.tokens.remove(&1).unwrap();
    causal.tokens.insert(2, one);
    let msg = refused(&saved(&s, dir.path()));
    assert!(msg.contains("causal results name answer token 2"), "{msg}");
    // the last turn's entry may not hold results: the manifest's own fields are the last turn's
    let mut s = explained();
    s.manifest.turns[1].relevancy_tokens = vec![0];
    let msg = refused(&saved(&s, dir.path()));
    assert!(msg.contains("turn 2's entry holds explanations"), "{msg}");
}
