//! Key press → frame drawn, on a session shaped like LLaVA-7B (32 layers × 32 heads, 576
//! patches, 652 positions, 32 answer tokens; synthetic) in a 200×60 terminal.
//!
//! Besides criterion's estimate, it prints the 50th/99th percentiles and the maximum of single
//! key presses over a fixed replay that visits every view (the target is p99 ≤ 16 ms).

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

criterion_group!(benches, bench);
criterion_main!(benches);
