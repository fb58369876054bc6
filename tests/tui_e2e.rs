//! End to end in a real terminal: tmux runs the binary on a fixture session, send-keys drives it,
//! capture-pane checks text and colours; after `q` (and after SIGTERM) the shell is usable again;
//! `r` computes relevancy with the fixture model on the job worker and `s` saves it; a
//! two-region session opens on its high-res region and `b` shows the base view; `B` opens a
//! second session beside the first from a typed path and `X` closes it; `F` asks follow-ups on
//! a Qwen2-VL session under `--device cpu --dtype f32`, the second continuing from the KV cache
//! the worker kept. Skips with a message when tmux is not installed.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{save, AttentionDtype};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "e2e"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success(), "send-keys {keys:?}");
    }

    fn capture(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", "e2e"];
        if escapes {
            args.push("-e");
        }
        String::from_utf8_lossy(&self.run(&args).stdout).into_owned()
    }

    /// Waits until the pane shows `needle` (bounded wait, not a speed check).
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.capture(false);
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the pane never showed {needle:?}; it shows:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the pane's text with colour escapes contains `needle`.
    fn wait_for_escaped(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.capture(true);
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "the pane never had {needle:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_gone(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.capture(false);
            if !text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "the pane still shows {needle:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn start(dir: &Path, tag: &str) -> Tmux {
    let tmux = Tmux {
        socket: format!("lvlmscope-e2e-{}-{tag}", std::process::id()),
    };
    let home = dir.display().to_string();
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "e2e",
        "-x",
        "120",
        "-y",
        "40",
        "env",
        "-i",
        &format!("HOME={home}"),
        "PATH=/usr/bin:/bin",
        "TERM=xterm-256color",
        "COLORTERM=truecolor",
        "PS1=$ ",
        "sh",
    ]);
    assert!(out.status.success(), "tmux new-session: {out:?}");
    tmux.wait_for("$");
    tmux
}

/// Starts `lvlmscope tui --session file` in the pane and returns the app's process id.
fn open_app(tmux: &Tmux, file: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_lvlmscope");
    tmux.send(&[&format!("{bin} tui --session {file}"), "Enter"]);
    tmux.wait_for("Answer · token 0/5");
    let shell = String::from_utf8_lossy(
        &tmux
            .run(&["list-panes", "-t", "e2e", "-F", "#{pane_pid}"])
            .stdout,
    )
    .trim()
    .to_string();
    let children = Command::new("ps")
        .args(["-o", "pid=", "--ppid", &shell])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&children.stdout).trim().to_string();
    assert!(
        !pid.is_empty() && !pid.contains(char::is_whitespace),
        "child pids: {pid:?}"
    );
    pid
}

fn fixture(dir: &Path) -> String {
    let path = dir.join("fixture.safetensors");
    save(
        &synthetic_session(&SyntheticSpec::tiny()),
        &path,
        AttentionDtype::F32,
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn keys_drive_the_app_and_quit_restores_the_shell() {
    if !tmux_available() {
        eprintln!("skipping the end-to-end test: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = fixture(dir.path());
    let tmux = start(dir.path(), "keys");
    let bin = env!("CARGO_BIN_EXE_lvlmscope");
    tmux.send(&[&format!("{bin} tui --session {file}"), "Enter"]);
    let text = tmux.wait_for("Answer · token 0/5");
    assert!(text.contains("layer 1/3"), "{text}");
    // The colour bar starts at viridis(0) = (68, 1, 84), in truecolor.
    let colored = tmux.wait_for_escaped("48;2;68;1;84");
    tmux.send(&["l"]);
    tmux.wait_for("Answer · token 1/5");
    tmux.send(&["]"]);
    tmux.wait_for("layer 2/3");
    assert_ne!(tmux.capture(true), colored, "the frame did not change");
    tmux.send(&["}"]);
    tmux.wait_for("head 1/3");
    // The help takes two pages here: Space turns to the second, any other key closes it.
    tmux.send(&["?"]);
    tmux.wait_for("Keys 1/2 (Space: next page");
    tmux.send(&["Space"]);
    tmux.wait_for("Keys 2/2 (any key closes)");
    tmux.send(&["x"]);
    tmux.wait_gone("any key closes");
    tmux.send(&["2"]);
    tmux.wait_for("no relevancy for token 1");
    tmux.send(&["s"]);
    tmux.wait_for("saved session to");
    tmux.send(&["q"]);
    tmux.wait_gone("Answer ·");
    tmux.send(&["echo done-$((40+2))", "Enter"]);
    tmux.wait_for("done-42");
}

#[test]
fn a_two_region_session_opens_on_high_res_and_b_shows_the_base_view() {
    if !tmux_available() {
        eprintln!("skipping the end-to-end test: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anyres.safetensors");
    let s = synthetic_session(&SyntheticSpec::anyres_tiny());
    save(&s, &path, AttentionDtype::F32).unwrap();
    let tmux = start(dir.path(), "regions");
    let bin = env!("CARGO_BIN_EXE_lvlmscope");
    tmux.send(&[&format!("{bin} tui --session {}", path.display()), "Enter"]);
    let text = tmux.wait_for("Image · high-res 6×8 · base 4×4");
    assert!(text.contains("b base/high-res"), "{text}");
    tmux.send(&["b"]);
    tmux.wait_for("Image · base 4×4 · high-res 6×8");
    tmux.send(&["q"]);
    tmux.wait_gone("Answer ·");
    tmux.send(&["echo regions-$((5+5))", "Enter"]);
    tmux.wait_for("regions-10");
}

#[test]
fn b_opens_a_second_session_beside_the_first_and_x_closes_it() {
    if !tmux_available() {
        eprintln!("skipping the end-to-end test: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = fixture(dir.path());
    let b = dir.path().join("other.safetensors");
    let spec = SyntheticSpec {
        seed: 8,
        ..SyntheticSpec::tiny()
    };
    save(&synthetic_session(&spec), &b, AttentionDtype::F32).unwrap();
    let tmux = start(dir.path(), "compare");
    open_app(&tmux, &a);
    tmux.send(&["B"]);
    tmux.wait_for("Compare with session B");
    tmux.send(&["-l", &b.display().to_string()]);
    tmux.send(&["Enter"]);
    let text = tmux.wait_for("B = other.safetensors");
    assert!(
        text.contains("A = fixture.safetensors · keys act here"),
        "{text}"
    );
    tmux.send(&["w"]);
    tmux.wait_for("B = other.safetensors · keys act here");
    tmux.send(&["X"]);
    tmux.wait_gone("B = other.safetensors");
    tmux.send(&["q"]);
    tmux.wait_gone("Answer ·");
    tmux.send(&["echo compare-$((6+6))", "Enter"]);
    tmux.wait_for("compare-12");
}

#[test]
fn sigterm_and_bad_sessions_leave_a_usable_terminal() {
    if !tmux_available() {
        eprintln!("skipping the end-to-end test: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = fixture(dir.path());
    let tmux = start(dir.path(), "term");
    let bin = env!("CARGO_BIN_EXE_lvlmscope");
    let pid = open_app(&tmux, &file);
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    tmux.wait_gone("Answer ·");
    tmux.send(&["echo after-term-$((1+1))", "Enter"]);
    tmux.wait_for("after-term-2");
    // A file that is not a session is a message inside the app, not an exit.
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a session").unwrap();
    tmux.send(&[&format!("{bin} tui --session {}", bad.display()), "Enter"]);
    tmux.wait_for("not a readable session file");
    tmux.send(&["q"]);
    tmux.wait_gone("not a readable session file");
    tmux.send(&["echo after-bad-$((2+1))", "Enter"]);
    tmux.wait_for("after-bad-3");
}

#[test]
fn closing_the_terminal_ends_the_app() {
    if !tmux_available() {
        eprintln!("skipping the end-to-end test: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = fixture(dir.path());
    let tmux = start(dir.path(), "hangup");
    let pid = open_app(&tmux, &file);
    // Killing the session closes the pty, as a dropped SSH connection does.
    assert!(tmux.run(&["kill-server"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}")).exists() {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.contains(") Z ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lvlmscope (pid {pid}) is still running after its terminal closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn r_computes_relevancy_with_the_model_and_s_saves_it() {
    if !tmux_available() {
        eprintln!("skipping the end-to-end test: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let file = dir.path().join("model.session");
    let bin = env!("CARGO_BIN_EXE_lvlmscope");
    let out = Command::new(bin)
        .args(["run", "--model"])
        .arg(fixtures.join("tiny-llava-gqa"))
        .arg("--image")
        .arg(fixtures.join("image.png"))
        .args([
            "--prompt",
            "What is in the picture?",
            "--max-new-tokens",
            "8",
        ])
        .arg("--save")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tmux = start(dir.path(), "relevancy");
    tmux.send(&[&format!("{bin} tui --session {}", file.display()), "Enter"]);
    tmux.wait_for("Answer · token 0/8");
    tmux.send(&["2"]);
    tmux.wait_for("no relevancy for token 0");
    tmux.send(&["l", "r"]);
    let text = tmux.wait_for("relevancy of token 1 computed in");
    let text = if text.contains("image (max)") {
        text
    } else {
        tmux.wait_for("image (max)")
    };
    assert!(text.contains("unsaved results"), "{text}");
    tmux.send(&["s"]);
    tmux.wait_for("saved session to");
    let saved = lvlmscope::session::load(&file).unwrap();
    assert_eq!(saved.manifest.relevancy_tokens, vec![1]);
    assert!(saved
        .relevancy_llm
        .unwrap()
        .row(&[1])
        .iter()
        .any(|&v| v > 0.0));
    tmux.send(&["q"]);
    tmux.wait_gone("Answer ·");
    tmux.send(&["echo rel-$((3+4))", "Enter"]);
    tmux.wait_for("rel-7");
}

#[test]
fn f_asks_follow_ups_that_continue_from_the_kept_cache() {
    if !tmux_available() {
        eprintln!("skipping the end-to-end test: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let file = dir.path().join("talk.session");
    let bin = env!("CARGO_BIN_EXE_lvlmscope");
    let out = Command::new(bin)
        .args(["run", "--model"])
        .arg(fixtures.join("tiny-qwen2-vl"))
        .arg("--image")
        .arg(fixtures.join("image.png"))
        .args([
            "--prompt",
            "What is in the picture?",
            "--max-new-tokens",
            "5",
        ])
        .arg("--save")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tmux = start(dir.path(), "follow-up");
    // the follow-ups' session is saved under a new name in the working folder
    tmux.send(&[&format!("cd {}", dir.path().display()), "Enter"]);
    tmux.send(&[
        &format!(
            "{bin} tui --device cpu --dtype f32 --session {}",
            file.display()
        ),
        "Enter",
    ]);
    tmux.wait_for("Answer · token 0/5");
    tmux.send(&["F"]);
    tmux.wait_for("Follow-up on the same image");
    tmux.send(&["What colour is the square?", "Enter"]);
    tmux.wait_for("Turn 2/2");
    tmux.send(&["F"]);
    tmux.wait_for("Follow-up on the same image");
    tmux.send(&["Why?", "Enter"]);
    tmux.wait_for("Turn 3/3");
    tmux.send(&["s"]);
    let text = tmux.wait_for("saved session to ");
    let name = text
        .split("saved session to ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the saved file's name");
    let saved = lvlmscope::session::load(&dir.path().join(name)).unwrap();
    assert_eq!(saved.num_turns(), 3);
    let turns = &saved.manifest.turns;
    // the first follow-up resumed the file's session afresh, the second continued from the
    // cache the worker kept
    assert_eq!(turns[1].reused, 0);
    assert!(turns[2].reused >= turns[1].input_len, "{turns:?}");
    assert_eq!(saved.manifest.generation.device.as_deref(), Some("cpu"));
    tmux.send(&["q"]);
    tmux.wait_gone("Answer ·");
    tmux.send(&["echo talk-$((5+6))", "Enter"]);
    tmux.wait_for("talk-11");
}
