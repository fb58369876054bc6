//! Model-backed jobs on saved Qwen2-VL / Qwen2.5-VL sessions: relevancy on demand equals the
//! relevancy `run --relevancy` stores, and the deletion experiments re-read the run exactly
//! (with the original picture the greedy token is the most probable one at every step).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use lvlmscope::explain::faithfulness::{fill_patches, mean_colour, softmax_at};
use lvlmscope::generate::RunRequest;
use lvlmscope::job::{JobOutput, ModelJob, ModelService, ModelSpec, SessionModel};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn request(model: &str, relevancy: bool) -> RunRequest {
    RunRequest {
        model: fixtures().join(model).display().to_string(),
        image: fixtures().join("image_tall.png"),
        prompt: "What is in the picture?".into(),
        max_new_tokens: 5,
        relevancy,
        ..RunRequest::default()
    }
}

#[test]
fn relevancy_on_demand_equals_the_rows_of_the_run() {
    for model in ["tiny-qwen2-vl", "tiny-qwen2_5-vl"] {
        let cancel = AtomicBool::new(false);
        let with = lvlmscope::job::run(&request(model, true), &cancel, &mut |_| {}).unwrap();
        let mut without =
            lvlmscope::job::run(&request(model, false), &cancel, &mut |_| {}).unwrap();
        assert_eq!(with.output_ids, without.output_ids);
        assert!(without.relevancy_llm.is_none());
        let tokens: Vec<usize> = (0..without.num_output()).collect();
        let mut service = ModelService::new();
        let added = service
            .add_relevancy(&mut without, &tokens, &mut |_| {})
            .unwrap();
        assert_eq!(added, tokens.len());
        for (name, a, b) in [
            ("llm", &with.relevancy_llm, &without.relevancy_llm),
            ("vit", &with.relevancy_vit, &without.relevancy_vit),
            (
                "combined",
                &with.relevancy_combined,
                &without.relevancy_combined,
            ),
        ] {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            assert_eq!(a.shape, b.shape, "{model} {name}");
            let worst = a
                .data
                .iter()
                .zip(&b.data)
                .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{model} {name}: {worst}");
        }
        assert_eq!(service.loads(), 1);
    }
}

#[test]
fn deletion_rereads_the_run_and_removing_cells_changes_the_answer() {
    let model = "tiny-qwen2_5-vl";
    let session =
        lvlmscope::job::run(&request(model, false), &AtomicBool::new(false), &mut |_| {}).unwrap();
    let spec = ModelSpec::for_session(&session);
    let mut service = ModelService::new();
    let loaded = service.model(&spec, &mut |_| {}).unwrap();
    assert!(matches!(loaded, SessionModel::Qwen(_)));
    loaded.check_fits(&spec.path, &session).unwrap();
    let px = &session.pixel_values;
    let hw = (px.shape[1], px.shape[2]);
    let ids: Vec<u32> = session
        .input_ids
        .iter()
        .chain(&session.output_ids)
        .map(|&i| i as u32)
        .collect();
    let n = session.num_input();
    let grid = session.manifest.model.image_grid;
    let cells: Vec<usize> = (0..grid[0] * grid[1]).collect();
    let blank = fill_patches(px, grid, &cells, mean_colour(px)).data;
    let mut changed = 0f32;
    for t in 0..session.num_output() {
        let rows = loaded
            .scorer()
            .next_token_logits(&ids[..n + t], n, &[px.data.clone(), blank.clone()], hw)
            .unwrap();
        let target = session.output_ids[t] as usize;
        let argmax = (0..rows[0].len())
            .max_by(|&a, &b| rows[0][a].total_cmp(&rows[0][b]))
            .unwrap();
        assert_eq!(
            argmax, target,
            "token {t}: the re-read does not give the run's token"
        );
        changed = changed.max((softmax_at(&rows[0], target) - softmax_at(&rows[1], target)).abs());
    }
    assert!(
        changed > 1e-3,
        "removing every cell changes nothing: {changed}"
    );
    let map: Vec<f32> = (0..cells.len()).map(|i| i as f32).collect();
    let job = ModelJob::Faithfulness {
        token: 1,
        maps: vec![("ramp".into(), map)],
        fraction: 0.5,
        region: None,
    };
    let out = service
        .run(&session, &job, &AtomicBool::new(false), &mut |_| {})
        .unwrap();
    let JobOutput::Faithfulness {
        original, drops, ..
    } = out
    else {
        panic!("expected drops, got {out:?}");
    };
    assert!(original > 0.0 && original <= 1.0);
    assert_eq!(drops.len(), 1);
    assert!(drops[0].1.abs() <= 1.0);
}
