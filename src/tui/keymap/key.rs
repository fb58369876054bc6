//! One key of the keymap: how it is written in a theme and shown in the help.

use std::fmt;
use std::str::FromStr;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// A key: a code, with or without Ctrl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// The key.
    pub code: KeyCode,
    /// Whether Ctrl is held.
    pub ctrl: bool,
}

impl Key {
    /// The key without Ctrl.
    pub fn plain(code: KeyCode) -> Key {
        Key { code, ctrl: false }
    }

    /// Ctrl and a character.
    pub fn ctrl(c: char) -> Key {
        Key {
            code: KeyCode::Char(c),
            ctrl: true,
        }
    }

    /// The key of a terminal event (Shift is part of the character).
    pub fn of(k: &KeyEvent) -> Key {
        Key {
            code: k.code,
            ctrl: k.modifiers.contains(KeyModifiers::CONTROL),
        }
    }
}

const NAMED: [(&str, KeyCode); 14] = [
    ("Tab", KeyCode::Tab),
    ("Shift-Tab", KeyCode::BackTab),
    ("Enter", KeyCode::Enter),
    ("Esc", KeyCode::Esc),
    ("Backspace", KeyCode::Backspace),
    ("Home", KeyCode::Home),
    ("End", KeyCode::End),
    ("PageUp", KeyCode::PageUp),
    ("PageDown", KeyCode::PageDown),
    ("←", KeyCode::Left),
    ("→", KeyCode::Right),
    ("↑", KeyCode::Up),
    ("↓", KeyCode::Down),
    ("space", KeyCode::Char(' ')),
];

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ctrl {
            write!(f, "Ctrl-")?;
        }
        match NAMED.iter().find(|(_, c)| *c == self.code) {
            Some((name, _)) => write!(f, "{name}"),
            None => match self.code {
                KeyCode::Char(c) => write!(f, "{c}"),
                KeyCode::F(n) => write!(f, "F{n}"),
                other => write!(f, "{other:?}"),
            },
        }
    }
}

/// A key name a keymap cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeymapError {
    /// Not a key.
    #[error("{0:?} is not a key (a character, Ctrl-x, F1…F12, or one of Tab, Shift-Tab, Enter, Esc, Backspace, Home, End, PageUp, PageDown, Left, Right, Up, Down, space)")]
    Key(String),
    /// Not an action.
    #[error("{0:?} is not an action (for example quit, layer_next, compute_causal)")]
    Action(String),
}

impl FromStr for Key {
    type Err = KeymapError;

    fn from_str(s: &str) -> Result<Key, KeymapError> {
        let err = || KeymapError::Key(s.to_string());
        let (ctrl, rest) = match s.strip_prefix("Ctrl-") {
            Some(r) if !r.is_empty() => (true, r),
            _ => (false, s),
        };
        let aliases = [
            ("Left", KeyCode::Left),
            ("Right", KeyCode::Right),
            ("Up", KeyCode::Up),
            ("Down", KeyCode::Down),
            ("Space", KeyCode::Char(' ')),
        ];
        let named = NAMED.iter().chain(aliases.iter()).find(|(n, _)| *n == rest);
        let code = match named {
            Some((_, c)) => *c,
            None => {
                let mut chars = rest.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => KeyCode::Char(c),
                    _ => match rest.strip_prefix('F').and_then(|n| n.parse().ok()) {
                        Some(n @ 1..=12) => KeyCode::F(n),
                        _ => return Err(err()),
                    },
                }
            }
        };
        Ok(Key { code, ctrl })
    }
}
