//! Key press → frame drawn, on a session shaped like LLaVA-7B (32 layers × 32 heads, 576
//! patches, 652 positions, 32 answer tokens; synthetic) in a 200×60 terminal.
//!
//! Besides criterion's estimate, it prints the 50th/99th percentiles and the maximum of single
//! key presses over a fixed replay that visits every view (the target is p99 ≤ 16 ms).
//!
//! The `onevision/*` cases do the same on an anyres-sized session (LLaVA-OneVision-0.5B shape:
//! 24 layers × 14 heads, a 27×27 base view and a 46×46 stitched high-res region with 46
//! separators, 2891 image positions, 64 answer tokens), one case per common key: next token,
//! toggle region, move the patch cursor, switch method; each prints its own percentiles.
//!
//! The `split/*` cases open a second LLaVA-7B-shaped session beside the first (the compare
//! split view, linked) and press next token and switch layer; `split/reliance_uncached` times
//! what the split view's reliance cache saves per key (`explain::compare::sides` of both).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::{draw, update, App, Msg};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// A replay that moves tokens, layers, heads, aggregations, views, methods and patches.
const KEYS: &str = "ll]]}mmm[v l v vl l1p jl j lp2m3{1\tj\tj\tl\t\t xhhhlll[[[]]]";

fn codes() -> Vec<KeyCode> {
    KEYS.chars()
        .map(|c| match c {
            '\t' => KeyCode::Tab,
            c => KeyCode::Char(c),
        })
        .collect()
}

fn setup() -> (App, Terminal<TestBackend>) {
    let session = synthetic_session(&SyntheticSpec::llava_7b());
    let app = App::with_session(
        Look::new(Theme::dark(), ColorMode::TrueColor),
        session,
        None,
    );
    let mut term = Terminal::new(TestBackend::new(200, 60)).expect("test backend");
    term.draw(|f| draw(f, &app)).expect("draw");
    (app, term)
}

fn step(app: &mut App, term: &mut Terminal<TestBackend>, code: KeyCode) {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    term.draw(|f| draw(f, app)).expect("draw");
}

fn percentiles() {
    let (mut app, mut term) = setup();
    let codes = codes();
    let mut times: Vec<Duration> = Vec::new();
    for i in 0..(codes.len() * 20) {
        let t0 = Instant::now();
        step(&mut app, &mut term, codes[i % codes.len()]);
        times.push(t0.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "key→frame over {} presses (200×60, LLaVA-7B shape): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
}

/// Milliseconds at the 50th and 99th percentiles and the maximum of `times`.
fn quantiles(times: &mut [Duration]) -> (f64, f64, f64) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.99), at(1.0))
}

/// The keys of each anyres case and the presses that put the app in its place first.
const ONEVISION_CASES: [(&str, &str, &str); 4] = [
    ("next_token", "", "llllllllllhhhhhhhhhh"),
    ("toggle_region", "", "b"),
    ("patch_cursor", "\t\t", "lllljjjjhhhhkkkk"),
    ("switch_method", "", "123"),
];

fn press(app: &mut App, term: &mut Terminal<TestBackend>, c: char) {
    let code = match c {
        '\t' => KeyCode::Tab,
        c => KeyCode::Char(c),
    };
    step(app, term, code);
}

fn bench_onevision(c: &mut Criterion) {
    let state: RefCell<Option<(App, Terminal<TestBackend>)>> = RefCell::new(None);
    for (name, prelude, keys) in ONEVISION_CASES {
        let times: RefCell<Vec<Duration>> = RefCell::new(Vec::new());
        let mut group = c.benchmark_group("onevision");
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(2));
        group.warm_up_time(Duration::from_millis(500));
        group.bench_function(name, |b| {
            let mut guard = state.borrow_mut();
            let (app, term) = guard.get_or_insert_with(|| {
                let s = synthetic_session(&SyntheticSpec::onevision());
                let app =
                    App::with_session(Look::new(Theme::dark(), ColorMode::TrueColor), s, None);
                let mut term = Terminal::new(TestBackend::new(200, 60)).expect("test backend");
                term.draw(|f| draw(f, &app)).expect("draw");
                (app, term)
            });
            // Back to the answer pane, attention, high-res; then the case's own place.
            while app.focus != lvlmscope::tui::state::Pane::Answer {
                press(app, term, '\t');
            }
            press(app, term, '1');
            if app.doc.image.region() != 1 {
                press(app, term, 'b');
            }
            prelude.chars().for_each(|k| press(app, term, k));
            let keys: Vec<char> = keys.chars().collect();
            let mut i = 0usize;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    press(app, term, keys[i % keys.len()]);
                    let dt = t0.elapsed();
                    times.borrow_mut().push(dt);
                    total += dt;
                    i += 1;
                }
                total
            })
        });
        group.finish();
        let mut times = times.into_inner();
        if !times.is_empty() {
            let (p50, p99, max) = quantiles(&mut times);
            println!(
                "onevision/{name}: key→frame over {} presses (200×60, 2891 image positions): \
                 p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
                times.len()
            );
        }
    }
}

/// The split view's cases: (name, key pressed).
const SPLIT_CASES: &[(&str, char)] = &[("next_token", 'l'), ("next_layer", ']')];

fn bench_split(c: &mut Criterion) {
    let a = synthetic_session(&SyntheticSpec::llava_7b());
    let b = synthetic_session(&SyntheticSpec {
        seed: 8,
        ..SyntheticSpec::llava_7b()
    });
    let mut app = App::with_session(
        Look::new(Theme::dark(), ColorMode::TrueColor),
        a.clone(),
        None,
    );
    lvlmscope::tui::compare::open_b(&mut app, b.clone(), "b".into(), None);
    let mut term = Terminal::new(TestBackend::new(200, 60)).expect("test backend");
    term.draw(|f| draw(f, &app)).expect("draw");
    let mut group = c.benchmark_group("split");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    for (name, key) in SPLIT_CASES {
        let times: RefCell<Vec<Duration>> = RefCell::new(Vec::new());
        group.bench_function(*name, |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    press(&mut app, &mut term, *key);
                    let dt = t0.elapsed();
                    times.borrow_mut().push(dt);
                    total += dt;
                }
                total
            })
        });
        let mut times = times.into_inner();
        if !times.is_empty() {
            let (p50, p99, max) = quantiles(&mut times);
            println!(
                "split/{name}: key→frame over {} presses (200×60, two 7B-shaped sessions): \
                 p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
                times.len()
            );
        }
    }
    group.bench_function("reliance_uncached", |bench| {
        bench.iter(|| lvlmscope::explain::compare::sides(&a, &b))
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    percentiles();
    let (mut app, mut term) = setup();
    let codes = codes();
    let mut i = 0usize;
    c.bench_function("key_to_frame_200x60_llava7b", |b| {
        b.iter(|| {
            step(&mut app, &mut term, codes[i % codes.len()]);
            i += 1;
        })
    });
}

criterion_group!(benches, bench, bench_onevision, bench_split);
criterion_main!(benches);
