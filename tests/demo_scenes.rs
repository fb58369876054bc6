//! The demo scene generator: masks match what is drawn, questions are answerable, and
//! generation is deterministic.

use lvlmscope::demo::{generate, scene_seed, Mask, QuestionKind, Scene, SceneConfig};

fn scenes(n: u64) -> Vec<Scene> {
    let config = SceneConfig::default();
    (0..n)
        .map(|i| generate(scene_seed(7, i), &config))
        .collect()
}

#[test]
fn masks_are_exactly_the_drawn_pixels() {
    for (s, scene) in scenes(200).iter().enumerate() {
        let (w, h) = scene.image.dimensions();
        assert!(
            !scene.objects.is_empty() && scene.objects.len() <= 4,
            "scene {s}"
        );
        for y in 0..h {
            for x in 0..w {
                let owners: Vec<usize> = (0..scene.objects.len())
                    .filter(|&i| scene.objects[i].mask.get(x, y))
                    .collect();
                let px = scene.image.get_pixel(x, y).0;
                match owners.as_slice() {
                    [] => assert_eq!(
                        px,
                        scene.background.get_pixel(x, y).0,
                        "scene {s} ({x},{y})"
                    ),
                    [i] => assert_eq!(px, scene.objects[*i].rgb, "scene {s} ({x},{y})"),
                    _ => panic!("scene {s}: pixel ({x},{y}) is in several masks {owners:?}"),
                }
            }
        }
        for (i, o) in scene.objects.iter().enumerate() {
            // Each mask is the shape itself: non-empty, and every mask pixel's centre is inside
            // the shape geometry (nothing is occluded with the default placement).
            assert!(o.mask.count() > 20, "scene {s} object {i} is tiny");
            for y in 0..h {
                for x in 0..w {
                    let inside = o.shape.contains(
                        x as f32 + 0.5 - o.center.0,
                        y as f32 + 0.5 - o.center.1,
                        o.radius,
                    );
                    assert_eq!(o.mask.get(x, y), inside, "scene {s} object {i} ({x},{y})");
                }
            }
            // Object colours are far from the (dark) background.
            assert!(o.rgb.iter().any(|c| *c > 150), "scene {s} object {i}");
        }
    }
}

#[test]
fn generation_is_deterministic_for_a_seed() {
    let config = SceneConfig::default();
    let a = generate(42, &config);
    let b = generate(42, &config);
    assert_eq!(a, b);
    let c = generate(43, &config);
    assert_ne!(a.image, c.image);
}

#[test]
fn questions_have_unambiguous_answers() {
    let config = SceneConfig::default();
    let mut kinds_seen = std::collections::HashSet::new();
    for scene in scenes(300) {
        for kind in QuestionKind::ALL {
            for q in scene.questions(kind, &config) {
                kinds_seen.insert(kind);
                match kind {
                    QuestionKind::Color => {
                        let o = &scene.objects[q.object.expect("colour questions have an object")];
                        assert_eq!(q.answer, o.color.name());
                        assert!(q.question.contains(o.shape.name()));
                        let same = scene.objects.iter().filter(|p| p.shape == o.shape).count();
                        assert_eq!(same, 1, "{}", q.question);
                    }
                    QuestionKind::Shape => {
                        let o = &scene.objects[q.object.expect("shape questions have an object")];
                        assert_eq!(q.answer, o.shape.name());
                        let same = scene.objects.iter().filter(|p| p.color == o.color).count();
                        assert_eq!(same, 1, "{}", q.question);
                    }
                    QuestionKind::Exists => {
                        let present = scene.objects.iter().any(|o| {
                            q.question
                                == format!("Is there a {} {}?", o.color.name(), o.shape.name())
                        });
                        assert_eq!(q.answer, if present { "yes" } else { "no" });
                        assert_eq!(q.object.is_some(), present);
                    }
                    QuestionKind::Count => {
                        let words = ["zero", "one", "two", "three", "four"];
                        assert_eq!(q.answer, words[scene.objects.len()]);
                        assert_eq!(q.object, None);
                    }
                    QuestionKind::Where => {
                        let o = &scene.objects[q.object.expect("where questions have an object")];
                        let (cx, cy) = o.mask.centroid().expect("non-empty mask");
                        let (dx, dy) = (cx - 32.0, cy - 32.0);
                        let ok = match q.answer.as_str() {
                            "left" => dx <= -8.0 && dx.abs() >= 2.0 * dy.abs(),
                            "right" => dx >= 8.0 && dx.abs() >= 2.0 * dy.abs(),
                            "top" => dy <= -8.0 && dy.abs() >= 2.0 * dx.abs(),
                            "bottom" => dy >= 8.0 && dy.abs() >= 2.0 * dx.abs(),
                            other => panic!("unexpected side {other}"),
                        };
                        assert!(ok, "{} → {} with offset ({dx}, {dy})", q.question, q.answer);
                    }
                }
            }
        }
    }
    assert_eq!(kinds_seen.len(), QuestionKind::ALL.len());
}

#[test]
fn rle_round_trips_and_rejects_bad_lengths() {
    let scene = generate(5, &SceneConfig::default());
    for o in &scene.objects {
        let rle = o.mask.to_rle();
        assert_eq!(Mask::from_rle(&rle).expect("valid rle"), o.mask);
        let mut bad = rle.clone();
        bad.counts.push(3);
        assert!(Mask::from_rle(&bad).is_err());
        let cells = o.mask.grid_fractions(8, 8);
        assert!((cells.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
}
