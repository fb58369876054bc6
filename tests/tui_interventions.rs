//! Knockout and the logit lens in the app (issue 16): `K` asks the job worker to block the
//! attention from the selected token to the selected patches, or else to the top k % of the
//! shown map's patches, over the layer range of `L`; `%` steps k. The result line shows p
//! before and after, Δp and the greedy tokens. `4` shows the lens map, `r` computes a reading
//! the session lacks (at once on the demo), it is cached in the session and the method pane
//! draws the curve over layers. With fake runners, then with the real model service on a
//! session of the embedded demo model, checked against `explain::knockout` and
//! `explain::lens` called directly (the code `lvlmscope knockout` and `report --method lens`
//! run).

mod common;
mod fixture_support;

use common::{look, press, run_jobs, FakeInterventions as Fake, NoModel};
use fixture_support::{fixture_model, fixture_run};
use std::sync::atomic::AtomicBool;

use crossterm::event::KeyCode;
use lvlmscope::explain::catalogue::{self, MapId};
use lvlmscope::explain::knockout::{self, top_patches, KeyBlock, KnockoutRequest, QuerySet};
use lvlmscope::job::{ModelJob, ModelService};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{RegionKind, Session};
use lvlmscope::tui::state::Method;
use lvlmscope::tui::{draw, App, Cmd};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn text(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(170, 50)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    let buf = t.backend().buffer();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn knockout_job(cmds: &[Cmd]) -> KnockoutRequest {
    match cmds {
        [Cmd::ModelJob(_, ModelJob::Knockout(r))] => r.clone(),
        other => panic!("expected one knockout job, got {other:?}"),
    }
}

#[test]
fn k_blocks_the_top_patches_of_the_shown_map_then_the_selected_patches() {
    let s = synthetic_session(&SyntheticSpec::tiny());
    let mut app = App::with_session(look(), s.clone(), None);
    press(&mut app, KeyCode::Right);
    let cmds = press(&mut app, KeyCode::Char('K'));
    let req = knockout_job(&cmds);
    // token 1, the shown map (layer 1 of 4, mean of heads), its top 10 % = 2 of 16 patches
    let id = MapId::attention(1, 4, lvlmscope::explain::attention::HeadAgg::Mean);
    let map = catalogue::explain(&s, &[1], &id).unwrap().grid.values;
    let top = top_patches(&map, 10.0);
    assert_eq!(top.len(), 2);
    assert_eq!(
        req,
        KnockoutRequest {
            token: 1,
            block: KeyBlock::Patches(top.clone()),
            query: QuerySet::Answer,
            layers: 0..=3,
            region: None,
        }
    );
    // the CLI's map:ID:PCT key set blocks the same positions
    let start = s.image_range().start;
    let cli = knockout::key_positions(&s, 1, &format!("map:{id}:10").parse::<KeyBlock>().unwrap())
        .unwrap();
    assert_eq!(cli, top.iter().map(|p| start + p).collect::<Vec<_>>());
    let screen = text(&app);
    assert!(
        screen.contains("K knockout → top 10% of the map · all layers (% L)"),
        "{screen}"
    );
    let last = run_jobs(&mut app, cmds, Box::new(Fake));
    assert!(last.is_empty(), "{last:?}");
    let screen = text(&app);
    for line in [
        "knockout · token 1 \"purple\" · layers 0-3".to_string(),
        format!("blocked top 10% of {id} (2 patches)"),
        "p 0.8750 → 0.1250 Δp -0.7500 · \"purple\" → \"red\" (changed)".into(),
    ] {
        assert!(screen.contains(&line), "{line} in\n{screen}");
    }
    // % steps k, L the layers (the shown layer alone); selected patches take precedence
    press(&mut app, KeyCode::Char('%'));
    press(&mut app, KeyCode::Char('L'));
    let req = knockout_job(&press(&mut app, KeyCode::Char('K')));
    assert_eq!(req.layers, 1..=1);
    assert_eq!(req.block, KeyBlock::Patches(top_patches(&map, 20.0)));
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Char(' '));
    press(&mut app, KeyCode::Right);
    press(&mut app, KeyCode::Char(' '));
    let cmds = press(&mut app, KeyCode::Char('K'));
    let req = knockout_job(&cmds);
    assert_eq!(req.block, KeyBlock::Patches(vec![0, 1]));
    run_jobs(&mut app, cmds, Box::new(Fake));
    let screen = text(&app);
    assert!(screen.contains("knockout · token 1 \"purple\" · layers 1-1"));
    assert!(screen.contains("blocked 2 selected patches"), "{screen}");
}

#[test]
fn k_says_why_when_it_cannot_knock_out() {
    let s = synthetic_session(&SyntheticSpec::tiny());
    let mut app = App::with_session(look(), s, None);
    // relevancy is not in the session: there is no map to take the top patches of
    press(&mut app, KeyCode::Char('2'));
    assert!(press(&mut app, KeyCode::Char('K')).is_empty());
    let notice = app.status.notice().unwrap().text.clone();
    assert!(notice.starts_with("no map to knock out: "), "{notice}");
    // a failing model job is one sentence in the status line
    press(&mut app, KeyCode::Char('1'));
    let cmds = press(&mut app, KeyCode::Char('K'));
    run_jobs(&mut app, cmds, Box::new(NoModel));
    let notice = app.status.notice().unwrap();
    assert!(notice.error);
    assert!(
        notice
            .text
            .starts_with("knockout of token 0 failed: could not load"),
        "{}",
        notice.text
    );
}

#[test]
fn the_lens_is_computed_on_r_cached_and_drawn_as_a_curve() {
    let s = synthetic_session(&SyntheticSpec::tiny());
    let mut app = App::with_session(look(), s, None);
    assert!(
        press(&mut app, KeyCode::Char('4')).is_empty(),
        "not the demo"
    );
    assert_eq!(app.doc.sel.method, Method::Lens);
    assert!(app.doc.view.map.is_none());
    assert!(text(&app).contains("no logit lens for token 0 yet: press r"));
    let cmds = press(&mut app, KeyCode::Char('r'));
    assert!(
        matches!(
            cmds.as_slice(),
            [Cmd::ModelJob(_, ModelJob::Lens { token: 0, layer: 1 })]
        ),
        "{cmds:?}"
    );
    run_jobs(&mut app, cmds, Box::new(Fake));
    assert!(app.doc.modified, "s saves the reading");
    let cached = &app.doc.session.as_ref().unwrap().manifest.lens;
    assert_eq!(cached.len(), 1);
    let map = app.doc.view.map.as_ref().expect("lens.l1 is shown");
    assert_eq!(map.values, cached[0].map);
    let screen = text(&app);
    assert!(screen.contains("token 0 \"purple\" · p and rank after each layer"));
    assert!(screen.contains("l3 #1 \"purple\""), "{screen}");
    assert!(screen.contains("l0 #4 \"red\""), "{screen}");
    // another layer's map is another reading
    press(&mut app, KeyCode::Char(']'));
    assert!(app.doc.view.map.is_none());
    let cmds = press(&mut app, KeyCode::Char('r'));
    assert!(matches!(
        cmds.as_slice(),
        [Cmd::ModelJob(_, ModelJob::Lens { token: 0, layer: 2 })]
    ));
}

#[test]
fn the_demo_reads_the_lens_out_on_switching() {
    let mut s = synthetic_session(&SyntheticSpec::tiny());
    s.manifest.model.path = format!(
        "/cache/lvlmscope/demo-{}",
        lvlmscope::demo::demo_model_hash()
    );
    let mut app = App::with_session(look(), s, None);
    let cmds = press(&mut app, KeyCode::Char('4'));
    assert!(
        matches!(
            cmds.as_slice(),
            [Cmd::ModelJob(_, ModelJob::Lens { token: 0, layer: 1 })]
        ),
        "{cmds:?}"
    );
    // a failure stops the automatic reading until r
    run_jobs(&mut app, cmds, Box::new(NoModel));
    assert!(press(&mut app, KeyCode::Char(']')).is_empty());
    assert_eq!(press(&mut app, KeyCode::Char('r')).len(), 1);
}

/// A session of the embedded demo model on its first scene, made by `job::run`.
fn demo_session() -> Session {
    let model = lvlmscope::demo::demo_model_dir().unwrap();
    let scenes = lvlmscope::demo::demo_scenes_dir().unwrap();
    let scene = lvlmscope::demo::demo_scenes().into_iter().next().unwrap();
    let request = lvlmscope::generate::RunRequest {
        model: model.display().to_string(),
        image: scenes.join(format!("{}.png", scene.name)),
        prompt: scene.question,
        max_new_tokens: 4,
        ..Default::default()
    };
    lvlmscope::job::run(&request, &AtomicBool::new(false), &mut |_| {}).unwrap()
}

#[test]
fn on_the_demo_model_the_app_gives_the_numbers_of_the_cli_code() {
    let s = demo_session();
    let loaded = lvlmscope::generate::LoadedModel::load(
        &s.manifest.model.path,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut app = App::with_session(look(), s.clone(), None);
    // knockout of token 0 against the top 10 % of the shown attention map, all layers
    let cmds = press(&mut app, KeyCode::Char('K'));
    let req = knockout_job(&cmds);
    run_jobs(&mut app, cmds, Box::new(ModelService::new()));
    let want = knockout::knockout(&loaded.model, &s, &req).unwrap();
    let got = &app
        .doc
        .method
        .knock()
        .last
        .as_ref()
        .expect("a result")
        .result;
    assert_eq!(*got, want);
    let screen = text(&app);
    let line = format!(
        "p {:.4} → {:.4} Δp {:+.4}",
        want.p_original, want.p_knockout, want.delta_p
    );
    assert!(screen.contains(&line), "{screen}");
    // the lens of token 0 at the shown layer: the same reading as explain::lens
    let cmds = press(&mut app, KeyCode::Char('4'));
    assert_eq!(cmds.len(), 1, "the demo reads it out at once: {cmds:?}");
    run_jobs(&mut app, cmds, Box::new(ModelService::new()));
    let layer = app.doc.sel.layer;
    let want = lvlmscope::explain::lens::lens(&loaded.model, &s, 0, Some(layer)).unwrap();
    let session = app.doc.session.as_ref().unwrap();
    assert_eq!(session.manifest.lens, vec![want.clone()]);
    assert_eq!(app.doc.view.map.as_ref().unwrap().values, want.map);
    let top = loaded.prompts.decode_token(want.curve[0].top);
    let screen = text(&app);
    let label = format!(
        "l0 #{} {:?}",
        want.curve[0].rank,
        lvlmscope::style::display_token(&top)
    );
    let shown: String = label.chars().take(16).collect();
    assert!(screen.contains(&shown), "{shown} in\n{screen}");
}

/// A session `job::run` makes with fixture `name` on the test image, and the fixture loaded.
fn fixture_session(name: &str) -> (Session, lvlmscope::job::SessionModel) {
    (fixture_run(name, "image.png", 4), fixture_model(name))
}

#[test]
fn k_and_the_lens_run_on_a_qwen_vl_session() {
    let (s, model) = fixture_session("tiny-qwen2-vl");
    let mut app = App::with_session(look(), s.clone(), None);
    let cmds = press(&mut app, KeyCode::Char('K'));
    let req = knockout_job(&cmds);
    assert_eq!(req.region, None, "one region");
    run_jobs(&mut app, cmds, Box::new(ModelService::new()));
    let want = knockout::knockout(model.replayer(), &s, &req).unwrap();
    let got = &app
        .doc
        .method
        .knock()
        .last
        .as_ref()
        .expect("a result")
        .result;
    assert_eq!(*got, want);
    assert!(app.status.notice().is_none_or(|n| !n.error));
    press(&mut app, KeyCode::Char('4'));
    let cmds = press(&mut app, KeyCode::Char('r'));
    run_jobs(&mut app, cmds, Box::new(ModelService::new()));
    let layer = app.doc.sel.layer;
    let want = lvlmscope::explain::lens::lens(model.replayer(), &s, 0, Some(layer)).unwrap();
    assert_eq!(
        app.doc.session.as_ref().unwrap().manifest.lens,
        vec![want.clone()]
    );
    assert_eq!(app.doc.view.map.as_ref().unwrap().values, want.map);
}

#[test]
fn on_an_anyres_session_k_and_the_lens_use_the_shown_region() {
    let (s, model) = fixture_session("tiny-llava-next");
    let regions = s.regions().to_vec();
    let (base, high) = (&regions[0], &regions[1]);
    let mut app = App::with_session(look(), s.clone(), None);
    // the app opens on the high-res region: the top 10 % of its cells
    let cmds = press(&mut app, KeyCode::Char('K'));
    let req = knockout_job(&cmds);
    assert_eq!(req.region, Some(RegionKind::Highres));
    let id = app.ctx().map_id();
    let map = catalogue::explain(&s, &[0], &id).unwrap().regions[1]
        .grid
        .values
        .clone();
    assert_eq!(req.block, KeyBlock::Patches(top_patches(&map, 10.0)));
    run_jobs(&mut app, cmds, Box::new(ModelService::new()));
    let want = knockout::knockout(model.replayer(), &s, &req).unwrap();
    let got = &app
        .doc
        .method
        .knock()
        .last
        .as_ref()
        .expect("a result")
        .result;
    assert_eq!(*got, want);
    let cells = high.cell_positions();
    assert!(got.keys.iter().all(|k| cells.contains(k)), "{:?}", got.keys);
    let blocked = format!("blocked top 10% of {id} in high-res (5 patches)");
    assert!(
        text(&app).contains(&blocked),
        "{blocked} in\n{}",
        text(&app)
    );
    // b shows the base region: its cells
    press(&mut app, KeyCode::Char('b'));
    let req = knockout_job(&press(&mut app, KeyCode::Char('K')));
    assert_eq!(req.region, Some(RegionKind::Base));
    let keys = knockout::key_positions_in(&s, 0, &req.block, req.region).unwrap();
    assert!(keys.iter().all(|k| base.cell_positions().contains(k)));
    press(&mut app, KeyCode::Esc);
    // the lens reads every cell; the image pane shows the shown region's
    press(&mut app, KeyCode::Char('4'));
    let cmds = press(&mut app, KeyCode::Char('r'));
    run_jobs(&mut app, cmds, Box::new(ModelService::new()));
    let layer = app.doc.sel.layer;
    let want = lvlmscope::explain::lens::lens(model.replayer(), &s, 0, Some(layer)).unwrap();
    assert_eq!(want.map.len(), base.cells() + high.cells());
    assert_eq!(
        app.doc.session.as_ref().unwrap().manifest.lens,
        vec![want.clone()]
    );
    assert_eq!(
        app.doc.view.map.as_ref().unwrap().values,
        want.map[..base.cells()]
    );
    press(&mut app, KeyCode::Char('b'));
    assert_eq!(
        app.doc.view.map.as_ref().unwrap().values,
        want.map[base.cells()..]
    );
}
