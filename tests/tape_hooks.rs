//! The forward's hook point can change attention (what interventions will build on): a tape
//! that masks a key in the scores changes the probabilities the layer uses and the logits; a
//! tape that changes nothing gives the plain forward's logits.

use std::path::PathBuf;

use candle_core::{DType, Device, Result, Tensor};
use lvlmscope::model::tape::{Site, Tower};
use lvlmscope::model::{Llava, ModelDir, NoTape, Tape};

fn model() -> Llava {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llava-gqa");
    let dir = ModelDir::resolve(dir.to_str().unwrap()).unwrap();
    Llava::load(&dir, DType::F32, &Device::Cpu).unwrap()
}

/// Hides key `key` from every decoder query and keeps the largest probability it still got.
struct HideKey {
    key: usize,
    leaked: f32,
    calls: usize,
}

impl Tape for HideKey {
    fn scores(&mut self, site: Site, scores: Tensor, _q_offset: usize) -> Result<Tensor> {
        if site.tower != Tower::Text {
            return Ok(scores);
        }
        let kv = scores.dim(3)?;
        let mask: Vec<f32> = (0..kv)
            .map(|j| {
                if j == self.key {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, kv, scores.device())?.to_dtype(scores.dtype())?;
        scores.broadcast_add(&mask)
    }

    fn probs(&mut self, site: Site, probs: Tensor, _q_offset: usize) -> Result<Tensor> {
        if site.tower == Tower::Text {
            self.calls += 1;
            let col = probs.narrow(3, self.key, 1)?;
            self.leaked = self.leaked.max(col.max_all()?.to_scalar::<f32>()?);
        }
        Ok(probs)
    }
}

fn logits(model: &Llava, ids: &[u32], tape: &mut dyn Tape) -> Vec<f32> {
    let embeds = model.embed_text(ids).unwrap();
    let mut cache = model.new_cache();
    model
        .forward(&embeds, 0, &mut cache, tape, true)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn a_tape_can_change_attention() {
    let model = model();
    let ids = [1u32, 20, 21, 22, 23, 24];
    let plain = logits(&model, &ids, &mut NoTape);
    let mut hide = HideKey {
        key: 1,
        leaked: 0.0,
        calls: 0,
    };
    let hidden = logits(&model, &ids, &mut hide);
    assert_eq!(hide.calls, model.num_layers());
    assert_eq!(hide.leaked, 0.0, "the layer used the changed scores");
    let moved = plain
        .iter()
        .zip(&hidden)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(moved > 1e-3, "hiding a key changes the logits ({moved})");
    // positions before the hidden key cannot see it anyway: their logits are unchanged
    let vocab = plain.len() / ids.len();
    assert_eq!(plain[..vocab], hidden[..vocab]);
}
