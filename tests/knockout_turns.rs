//! Knockout key sets of a conversation on a demo conversation of two turns: `earlier` blocks
//! the earlier turns after the image, `answers` the earlier answer, `question` only the
//! current question; the positions equal the ones read off the ids by hand, and the knockout
//! equals a forward with that hand-made mask. A turn without earlier turns refuses them in one
//! sentence. The lens reads the token of the turn asked for (`report --method lens --turn K`).

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use lvlmscope::explain::faithfulness::softmax_at;
use lvlmscope::explain::knockout::{self, KeyBlock, KnockoutRequest, QuerySet};
use lvlmscope::generate::LoadedModel;
use lvlmscope::model::interventions::Knockout;
use lvlmscope::model::tape::NoTape;
use lvlmscope::session::{self, Session};

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn conversation(dir: &Path) -> PathBuf {
    let save = dir.join("talk.safetensors");
    let out = Command::new(BIN)
        .args(["run", "--model"])
        .arg(root().join("assets/demo-model"))
        .arg("--image")
        .arg(root().join("assets/demo-scenes/scene_0.png"))
        .args(["--prompt", "What is in the picture?"])
        .args(["--prompt", "What colour is it?"])
        .args(["--max-new-tokens", "4", "--save"])
        .arg(&save)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    save
}

/// The earlier turns' positions read off the ids: the first turn's input is a prefix of this
/// turn's, followed by the first answer as far as its ids recur; returns (earlier, answers).
fn by_hand(s: &Session) -> (Vec<usize>, Vec<usize>) {
    let first = &s.turns[0];
    let n1 = first.input_ids.len();
    assert_eq!(&s.input_ids[..n1], first.input_ids.as_slice());
    let k = first
        .output_ids
        .iter()
        .zip(&s.input_ids[n1..])
        .take_while(|(a, b)| a == b)
        .count();
    assert!(k > 0, "the first answer follows the first turn's input");
    (
        (s.image_range().end..n1 + k).collect(),
        (n1..n1 + k).collect(),
    )
}

/// p(token t) with `keys` blocked from the token's query in `layers`, by a forward written
/// here: the ids, the image features, the decoder with the knockout tape.
fn masked_p(loaded: &LoadedModel, s: &Session, t: usize, keys: Vec<usize>) -> f32 {
    let m = &loaded.model;
    let mut ids: Vec<u32> = s.input_ids.iter().map(|&i| i as u32).collect();
    ids.extend(s.output_ids[..t].iter().map(|&i| i as u32));
    let px = &s.pixel_values;
    let pixels = Tensor::from_vec(px.data.clone(), px.shape.as_slice(), &Device::Cpu).unwrap();
    let features = m.image_features(&pixels, &mut NoTape).unwrap();
    let embeds = m
        .embed_sequence(&ids, s.num_input(), Some(&features))
        .unwrap();
    let q = s.query_position(t);
    let mut tape = Knockout::new(0..=m.num_layers() - 1, vec![q], keys);
    let logits: Vec<f32> = m
        .forward(&embeds, 0, &mut m.new_cache(), &mut tape, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(tape.applied() > 0);
    softmax_at(&logits, s.output_ids[t] as usize)
}

#[test]
fn earlier_and_answers_block_the_earlier_turn_as_read_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let file = conversation(tmp.path());
    let s = session::load(&file).unwrap();
    assert_eq!(s.num_turns(), 2);
    let (earlier, answers) = by_hand(&s);
    assert_eq!(knockout::earlier_positions(&s), earlier);
    assert_eq!(knockout::earlier_answer_positions(&s), answers);
    // the current question lies after the earlier turns
    let question = knockout::question_positions(&s);
    assert!(
        question.iter().all(|p| p > earlier.last().unwrap()),
        "{question:?}"
    );
    let loaded = LoadedModel::load(
        root().join("assets/demo-model").to_str().unwrap(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let layers = loaded.model.num_layers();
    for (block, keys) in [(KeyBlock::Earlier, earlier), (KeyBlock::Answers, answers)] {
        let req = KnockoutRequest {
            token: 0,
            block: block.clone(),
            query: QuerySet::Answer,
            layers: 0..=layers - 1,
            region: None,
        };
        let r = knockout::knockout(&loaded.model, &s, &req).unwrap();
        assert_eq!(r.keys, keys, "{block}");
        assert_eq!(r.p_knockout, masked_p(&loaded, &s, 0, keys), "{block}");
        assert_ne!(r.p_knockout, r.p_original, "{block}");
    }
    // the first turn has no earlier turns: one sentence, from the CLI too
    let first = s.turn(0).unwrap();
    let req = KnockoutRequest {
        token: 0,
        block: KeyBlock::Answers,
        query: QuerySet::Answer,
        layers: 0..=0,
        region: None,
    };
    let err = knockout::knockout(&loaded.model, &first, &req).unwrap_err();
    assert!(err.to_string().contains("has none"), "{err}");
    let one = tmp.path().join("one.safetensors");
    session::save(&first, &one, session::AttentionDtype::F32).unwrap();
    let out = Command::new(BIN)
        .arg("knockout")
        .arg(&one)
        .args(["--block", "earlier", "--layers", "0-1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("earlier turns"), "{err}");
}

#[test]
fn the_lens_reads_the_token_of_the_turn_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let file = conversation(tmp.path());
    let s = session::load(&file).unwrap();
    let lens = |extra: &[&str]| {
        Command::new(BIN)
            .arg("report")
            .arg(&file)
            .args(["--method", "lens", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    for turn in [1usize, 2] {
        let out = lens(&["--turn", &turn.to_string()]);
        assert!(out.status.success(), "{out:?}");
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let shown = s.turn(turn - 1).unwrap();
        assert_eq!(j["position"].as_u64(), Some(shown.query_position(0) as u64));
        assert_eq!(j["token_id"].as_i64(), Some(shown.output_ids[0]));
    }
    // --cache keeps an earlier turn's reading with that turn (the last turn's are unchanged)
    let out = lens(&["--turn", "1", "--cache"]);
    assert!(out.status.success(), "{out:?}");
    let computed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let back = session::load(&file).unwrap();
    let first = back.turn(0).unwrap();
    assert_eq!(first.manifest.lens.len(), 1);
    assert_eq!(first.manifest.lens[0].token, 0);
    assert_eq!(back.manifest.lens, s.manifest.lens);
    assert_eq!(
        (&back.output_ids, &back.turns[0].output_ids),
        (&s.output_ids, &s.turns[0].output_ids)
    );
    // and the next report reads it from the file, the model folder gone
    let mut moved = back.clone();
    moved.manifest.model.path = "/nonexistent/model".into();
    session::save(&moved, &file, session::AttentionDtype::F32).unwrap();
    let out = lens(&["--turn", "1"]);
    assert!(out.status.success(), "{out:?}");
    let cached: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cached["map"], computed["map"]);
    let probs = |j: &serde_json::Value| -> Vec<serde_json::Value> {
        j["curve"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["prob"].clone())
            .collect()
    };
    assert_eq!(probs(&cached), probs(&computed));
}
