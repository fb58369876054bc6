//! Colours shared by the terminal app and the report: colour maps, themes, and how colours reach
//! the terminal (truecolor, 256 colours, or none).

mod colormap;
pub mod overlay;
mod theme;

pub use colormap::{normalize, ColorMap, Rgb, UnknownColorMap};
pub use theme::{Theme, ThemeError, BUILTIN};

use ratatui::style::Color;

use crate::session::piece_text;

/// How many colours the terminal shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    /// 24-bit colour (`COLORTERM` is `truecolor` or `24bit`).
    TrueColor,
    /// The xterm 256-colour palette.
    Ansi256,
    /// No colour at all (`NO_COLOR` set): maps are drawn with shade characters.
    NoColor,
}

impl ColorMode {
    /// The mode the environment asks for: `NO_COLOR` (non-empty) wins, then `COLORTERM`.
    pub fn detect() -> Self {
        Self::from_env(
            std::env::var("NO_COLOR").ok().as_deref(),
            std::env::var("COLORTERM").ok().as_deref(),
        )
    }

    /// The mode for given values of `NO_COLOR` and `COLORTERM`.
    pub fn from_env(no_color: Option<&str>, colorterm: Option<&str>) -> Self {
        if no_color.is_some_and(|v| !v.is_empty()) {
            Self::NoColor
        } else if matches!(colorterm, Some("truecolor") | Some("24bit")) {
            Self::TrueColor
        } else {
            Self::Ansi256
        }
    }
}

/// The nearest colour of the xterm 256-colour palette (6×6×6 cube or grey ramp).
pub fn rgb_to_ansi256(c: Rgb) -> u8 {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    let nearest = |v: u8| {
        (0..6)
            .min_by_key(|&i| (LEVELS[i] as i32 - v as i32).abs())
            .unwrap_or(0)
    };
    let (r, g, b) = (nearest(c.0), nearest(c.1), nearest(c.2));
    let cube = Rgb(LEVELS[r], LEVELS[g], LEVELS[b]);
    let avg = (c.0 as u32 + c.1 as u32 + c.2 as u32) / 3;
    let gi = ((avg.saturating_sub(3)) / 10).min(23) as u8;
    let grey_v = 8 + 10 * gi;
    let grey = Rgb(grey_v, grey_v, grey_v);
    let dist = |a: Rgb| {
        let d = |x: u8, y: u8| (x as i32 - y as i32).pow(2);
        d(a.0, c.0) + d(a.1, c.1) + d(a.2, c.2)
    };
    if dist(grey) < dist(cube) {
        232 + gi
    } else {
        16 + 36 * r as u8 + 6 * g as u8 + b as u8
    }
}

/// The glyph that marks a part of a turn (the app's parts strip and word bars, the text
/// report's words): `█` image, `▓` this question, `▒` earlier answers, `░` earlier questions,
/// `·` this answer so far.
pub fn part_glyph(part: crate::explain::catalogue::TextPart) -> char {
    use crate::explain::catalogue::TextPart;
    match part {
        TextPart::Image => '█',
        TextPart::Question => '▓',
        TextPart::EarlierAnswers => '▒',
        TextPart::EarlierQuestions => '░',
        TextPart::Answer => '·',
    }
}

/// Shade characters for maps without colour, from low to high.
pub const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];

/// A shade character for `x` in [0, 1].
pub fn shade(x: f32) -> char {
    let x = if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
    SHADES[((x * 4.0).round() as usize).min(4)]
}

/// A theme as the terminal can show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Look {
    /// The theme.
    pub theme: Theme,
    /// The colour map in use (starts as the theme's).
    pub colormap: ColorMap,
    /// The terminal's colour mode.
    pub mode: ColorMode,
}

impl Look {
    /// A look for `theme` in `mode`.
    pub fn new(theme: Theme, mode: ColorMode) -> Self {
        Self {
            colormap: theme.colormap,
            theme,
            mode,
        }
    }

    /// A colour as the terminal shows it ([`Color::Reset`] without colour).
    pub fn color(&self, c: Rgb) -> Color {
        match self.mode {
            ColorMode::TrueColor => Color::Rgb(c.0, c.1, c.2),
            ColorMode::Ansi256 => Color::Indexed(rgb_to_ansi256(c)),
            ColorMode::NoColor => Color::Reset,
        }
    }

    /// The map colour of `x` in [0, 1].
    pub fn map_rgb(&self, x: f32) -> Rgb {
        self.colormap.sample(x)
    }

    /// The map colour of `x` in [0, 1], as the terminal shows it.
    pub fn map_color(&self, x: f32) -> Color {
        self.color(self.map_rgb(x))
    }

    /// Whether colour is off.
    pub fn no_color(&self) -> bool {
        self.mode == ColorMode::NoColor
    }
}

impl Default for Look {
    fn default() -> Self {
        Self::new(Theme::dark(), ColorMode::TrueColor)
    }
}

/// A token string as shown: the text it stands for ([`piece_text`]: word markers as spaces,
/// byte-level pieces decoded), trimmed, with newlines made visible.
pub fn display_token(t: &str) -> String {
    let s = piece_text(t).replace('\n', "↵");
    let trimmed = s.trim();
    if trimmed.is_empty() {
        "␣".into()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_the_environment() {
        assert_eq!(
            ColorMode::from_env(Some("1"), Some("truecolor")),
            ColorMode::NoColor
        );
        assert_eq!(
            ColorMode::from_env(Some(""), Some("truecolor")),
            ColorMode::TrueColor
        );
        assert_eq!(
            ColorMode::from_env(None, Some("24bit")),
            ColorMode::TrueColor
        );
        assert_eq!(ColorMode::from_env(None, None), ColorMode::Ansi256);
    }

    #[test]
    fn palette_and_shades() {
        assert_eq!(rgb_to_ansi256(Rgb(0, 0, 0)), 16);
        assert_eq!(rgb_to_ansi256(Rgb(255, 0, 0)), 196);
        assert_eq!(rgb_to_ansi256(Rgb(128, 128, 128)), 244);
        assert_eq!(shade(0.0), ' ');
        assert_eq!(shade(1.0), '█');
        assert_eq!(shade(0.5), '▒');
    }
}
