//! TOML themes: built-in ones embedded in the binary, or a file given by path. A theme also
//! carries the app's key remappings (its `[keys]` table, read by `tui::keymap`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::colormap::{ColorMap, Rgb};

/// Why a theme could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    /// Neither a built-in theme name nor a readable file.
    #[error("no theme named {0:?} (built-in: dark, light, high-contrast, jet) and no such file")]
    NotFound(String),
    /// The file could not be read.
    #[error("cannot read theme file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed or a value is invalid.
    #[error("theme {name} is invalid: {reason}")]
    Invalid {
        /// The theme name or file.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// The colours of every part of the interface, and the colour map for maps.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    /// The theme's name.
    pub name: String,
    /// The colour map for attention and relevancy maps.
    pub colormap: ColorMap,
    /// Background of the panes.
    pub background: Rgb,
    /// Ordinary text.
    pub foreground: Rgb,
    /// Secondary text (labels, hints).
    pub dim: Rgb,
    /// Titles and key names.
    pub accent: Rgb,
    /// Background of selected tokens and patches.
    pub selected: Rgb,
    /// The cursor (current token, patch or cell).
    pub cursor: Rgb,
    /// Pane borders.
    pub border: Rgb,
    /// The border of the focused pane.
    pub border_focus: Rgb,
    /// Warnings and errors.
    pub warning: Rgb,
    /// The `[keys]` table: action name → its keys (the app's keymap reads them).
    pub keys: BTreeMap<String, Vec<String>>,
}

/// One entry of the `[keys]` table: one key or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum KeysFile {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: String,
    colormap: String,
    colors: ColorsFile,
    #[serde(default)]
    keys: BTreeMap<String, KeysFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColorsFile {
    background: String,
    foreground: String,
    dim: String,
    accent: String,
    selected: String,
    cursor: String,
    border: String,
    border_focus: String,
    warning: String,
}

/// The built-in themes: name and TOML text.
pub const BUILTIN: [(&str, &str); 4] = [
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
    ("jet", include_str!("../../themes/jet.toml")),
];

fn hex(name: &str, field: &str, v: &str) -> Result<Rgb, ThemeError> {
    let bad = || ThemeError::Invalid {
        name: name.to_string(),
        reason: format!("colour {field} = {v:?} is not #rrggbb"),
    };
    let h = v.strip_prefix('#').ok_or_else(bad)?;
    if h.len() != 6 || !h.is_ascii() {
        return Err(bad());
    }
    let byte = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).map_err(|_| bad());
    Ok(Rgb(byte(0)?, byte(2)?, byte(4)?))
}

impl Theme {
    /// Parses a theme from TOML text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Self, ThemeError> {
        let f: ThemeFile = toml::from_str(text).map_err(|e| ThemeError::Invalid {
            name: origin.to_string(),
            reason: e.message().to_string(),
        })?;
        let c = &f.colors;
        let colormap =
            f.colormap
                .parse()
                .map_err(|e: super::UnknownColorMap| ThemeError::Invalid {
                    name: origin.to_string(),
                    reason: e.to_string(),
                })?;
        Ok(Self {
            colormap,
            background: hex(origin, "background", &c.background)?,
            foreground: hex(origin, "foreground", &c.foreground)?,
            dim: hex(origin, "dim", &c.dim)?,
            accent: hex(origin, "accent", &c.accent)?,
            selected: hex(origin, "selected", &c.selected)?,
            cursor: hex(origin, "cursor", &c.cursor)?,
            border: hex(origin, "border", &c.border)?,
            border_focus: hex(origin, "border_focus", &c.border_focus)?,
            warning: hex(origin, "warning", &c.warning)?,
            keys: f
                .keys
                .into_iter()
                .map(|(action, k)| match k {
                    KeysFile::One(k) => (action, vec![k]),
                    KeysFile::Many(ks) => (action, ks),
                })
                .collect(),
            name: f.name,
        })
    }

    /// A built-in theme by name, if there is one.
    pub fn builtin(name: &str) -> Option<Self> {
        BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| Self::parse(n, text).expect("built-in themes are valid"))
    }

    /// The default theme (`dark`).
    pub fn dark() -> Self {
        Self::builtin("dark").expect("dark is built in")
    }

    /// A built-in theme by name, else a TOML file at that path.
    pub fn load(name_or_file: &str) -> Result<Self, ThemeError> {
        if let Some(t) = Self::builtin(name_or_file) {
            return Ok(t);
        }
        let path = Path::new(name_or_file);
        if !path.exists() {
            return Err(ThemeError::NotFound(name_or_file.to_string()));
        }
        let text = std::fs::read_to_string(path).map_err(|source| ThemeError::Io {
            path: name_or_file.to_string(),
            source,
        })?;
        Self::parse(name_or_file, &text)
    }
}

impl Default for Theme {
    fn default() -> Self {
        Self::dark()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_files_load() {
        for (name, _) in BUILTIN {
            assert_eq!(Theme::builtin(name).unwrap().name, name);
        }
        assert_eq!(Theme::builtin("jet").unwrap().colormap, ColorMap::Jet);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mine.toml");
        let text = BUILTIN[0].1.replace("viridis", "turbo");
        std::fs::write(&p, text).unwrap();
        let t = Theme::load(p.to_str().unwrap()).unwrap();
        assert_eq!(t.colormap, ColorMap::Turbo);
        assert!(matches!(Theme::load("nope"), Err(ThemeError::NotFound(_))));
        std::fs::write(&p, BUILTIN[0].1.replace("#", "")).unwrap();
        assert!(matches!(
            Theme::load(p.to_str().unwrap()),
            Err(ThemeError::Invalid { .. })
        ));
    }
}
