//! The app's vision map (`V`) on one-view runs (a LLaVA-style fixture and Qwen2.5-VL): the
//! layer keys choose the vision layer (`attention.vision.l{l}.*`) while it is shown, clamped to
//! the layers the session holds, and the decoder layer stays; the header and the method pane
//! say which vision layer; the head keys move within the vision heads.

mod common;
mod compare_support;
mod fixture_support;

use common::{look, press};
use compare_support::screen;
use crossterm::event::KeyCode;
use fixture_support::fixture_run;
use lvlmscope::explain::catalogue::explain;
use lvlmscope::tui::App;

fn key(app: &mut App, c: char) {
    press(app, KeyCode::Char(c));
}

#[test]
fn layer_keys_choose_the_vision_layer_while_it_is_shown() {
    for (model, vision_layers) in [("tiny-qwen2_5-vl", 3), ("tiny-llava-gqa", 2)] {
        let s = fixture_run(model, "image.png", 2);
        let mut app = App::with_session(look(), s, None);
        let decoder_layer = app.doc.sel.layer;
        let last = vision_layers - 1;
        key(&mut app, 'V');
        assert_eq!(
            app.map_id().to_string(),
            "attention.vision.last.mean",
            "{model}"
        );
        let text = screen(&app, 200, 60);
        assert!(
            text.contains(&format!("vision layer {last}/{last}")),
            "{model}:\n{text}"
        );
        assert!(
            text.contains(&format!("vision tower · layer {last} of 0–{last}")),
            "{model}:\n{text}"
        );

        key(&mut app, '[');
        let id = app.map_id();
        assert_eq!(
            id.to_string(),
            format!("attention.vision.l{}.mean", last - 1)
        );
        assert_eq!(
            app.doc.sel.layer, decoder_layer,
            "{model}: the decoder layer stays"
        );
        let text = screen(&app, 200, 60);
        assert!(
            text.contains(&format!("vision layer {}/{last}", last - 1)),
            "{text}"
        );
        // The image pane shows that layer's map, as the catalogue gives it.
        let s = app.doc.session.as_ref().unwrap();
        let want = explain(s, &app.selected_tokens(), &id).unwrap();
        assert!(
            want.title.contains(&format!("layer {}", last - 1)),
            "{}",
            want.title
        );

        for _ in 0..5 {
            key(&mut app, '[');
        }
        assert_eq!(app.map_id().to_string(), "attention.vision.l0.mean");
        for _ in 0..5 {
            key(&mut app, ']');
        }
        assert_eq!(
            app.map_id().to_string(),
            format!("attention.vision.l{last}.mean"),
            "{model}: clamped to the layers held"
        );

        // The head keys move within the vision tower's heads.
        let heads = app
            .doc
            .session
            .as_ref()
            .unwrap()
            .manifest
            .model
            .vision_heads;
        for _ in 0..heads + 3 {
            key(&mut app, '}');
        }
        assert_eq!(
            app.map_id().to_string(),
            format!("attention.vision.l{last}.h{}", heads - 1)
        );
        let s = app.doc.session.as_ref().unwrap();
        assert!(explain(s, &app.selected_tokens(), &app.map_id()).is_ok());

        // Back to the decoder: its layer is where it was, and the layer keys move it again.
        key(&mut app, 'V');
        assert!(!app.map_id().to_string().starts_with("attention.vision"));
        assert_eq!(app.doc.sel.layer, decoder_layer);
        key(&mut app, '[');
        assert_eq!(
            app.doc.sel.layer,
            decoder_layer.saturating_sub(1),
            "{model}"
        );
        let text = screen(&app, 200, 60);
        assert!(!text.contains("vision layer"), "{model}:\n{text}");
    }
}
