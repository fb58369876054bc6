//! Colour maps for attention and relevancy maps: viridis, magma, turbo and jet.

use std::str::FromStr;

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// Linear blend: `self` at weight `1 − a`, `other` at weight `a` (a clamped to [0, 1]).
    pub fn blend(self, other: Rgb, a: f32) -> Rgb {
        let a = a.clamp(0.0, 1.0);
        let mix = |x: u8, y: u8| (x as f32 * (1.0 - a) + y as f32 * a).round() as u8;
        Rgb(
            mix(self.0, other.0),
            mix(self.1, other.1),
            mix(self.2, other.2),
        )
    }

    /// Relative luminance in [0, 1] (Rec. 709 weights on sRGB values).
    pub fn luma(self) -> f32 {
        (0.2126 * self.0 as f32 + 0.7152 * self.1 as f32 + 0.0722 * self.2 as f32) / 255.0
    }
}

/// A colour map from [0, 1] to colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMap {
    /// Perceptually uniform, dark violet to yellow.
    #[default]
    Viridis,
    /// Perceptually uniform, black to pale yellow through magenta.
    Magma,
    /// Google's rainbow map with smooth luminance.
    Turbo,
    /// The classic rainbow map of LVLM-Interpret's heat maps.
    Jet,
}

/// A colour map name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown colour map {0:?} (choose viridis, magma, turbo or jet)")]
pub struct UnknownColorMap(pub String);

impl FromStr for ColorMap {
    type Err = UnknownColorMap;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "viridis" => Ok(Self::Viridis),
            "magma" => Ok(Self::Magma),
            "turbo" => Ok(Self::Turbo),
            "jet" => Ok(Self::Jet),
            _ => Err(UnknownColorMap(s.to_string())),
        }
    }
}

const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 82, 139),
    (44, 113, 142),
    (33, 145, 140),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];

const MAGMA: [(u8, u8, u8); 9] = [
    (0, 0, 4),
    (28, 16, 68),
    (79, 18, 123),
    (129, 37, 129),
    (181, 54, 122),
    (229, 80, 100),
    (251, 135, 97),
    (254, 194, 135),
    (252, 253, 191),
];

fn table(stops: &[(u8, u8, u8)], x: f32) -> Rgb {
    let f = x * (stops.len() - 1) as f32;
    let i = (f.floor() as usize).min(stops.len() - 2);
    let a = f - i as f32;
    let (p, q) = (stops[i], stops[i + 1]);
    Rgb(p.0, p.1, p.2).blend(Rgb(q.0, q.1, q.2), a)
}

fn unit(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

impl ColorMap {
    /// Every map, in the order `c` cycles through them.
    pub const ALL: [ColorMap; 4] = [Self::Viridis, Self::Magma, Self::Turbo, Self::Jet];

    /// The map's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viridis => "viridis",
            Self::Magma => "magma",
            Self::Turbo => "turbo",
            Self::Jet => "jet",
        }
    }

    /// The next map in [`ColorMap::ALL`].
    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|&m| m == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    /// The colour of `x` in [0, 1] (clamped; NaN counts as 0).
    pub fn sample(self, x: f32) -> Rgb {
        let x = if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        match self {
            Self::Viridis => table(&VIRIDIS, x),
            Self::Magma => table(&MAGMA, x),
            Self::Turbo => {
                // Polynomial fit of turbo published with the map (A. Mikhailov, 2019).
                let x = x as f64;
                let r = 0.135_721_38
                    + x * (4.615_392_6
                        + x * (-42.660_322_58
                            + x * (132.131_082_34 + x * (-152.942_393_96 + x * 59.286_379_43))));
                let g = 0.091_402_61
                    + x * (2.194_188_39
                        + x * (4.842_966_58
                            + x * (-14.185_033_33 + x * (4.277_298_57 + x * 2.829_566_04))));
                let b = 0.106_673_3
                    + x * (12.641_946_08
                        + x * (-60.582_048_36
                            + x * (110.362_767_71 + x * (-89.903_109_12 + x * 27.348_249_73))));
                Rgb(unit(r as f32), unit(g as f32), unit(b as f32))
            }
            Self::Jet => {
                let c = |o: f32| unit(1.5 - (4.0 * x - o).abs());
                Rgb(c(3.0), c(2.0), c(1.0))
            }
        }
    }
}

/// Normalises `v` into [0, 1] against `(min, max)`; a flat range maps to 0.
pub fn normalize(v: f32, (lo, hi): (f32, f32)) -> f32 {
    if hi > lo && v.is_finite() {
        ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_parsing() {
        assert_eq!(ColorMap::Viridis.sample(0.0), Rgb(68, 1, 84));
        assert_eq!(ColorMap::Viridis.sample(1.0), Rgb(253, 231, 37));
        assert_eq!(ColorMap::Jet.sample(0.0), Rgb(0, 0, 128));
        assert_eq!(ColorMap::Jet.sample(0.5), Rgb(128, 255, 128));
        assert_eq!("MAGMA".parse::<ColorMap>(), Ok(ColorMap::Magma));
        assert!("rainbow".parse::<ColorMap>().is_err());
        for m in ColorMap::ALL {
            assert!(m.sample(1.0).luma() > m.sample(0.0).luma() || m == ColorMap::Jet);
            assert_eq!(m.sample(f32::NAN), m.sample(0.0));
        }
        assert_eq!(normalize(3.0, (1.0, 5.0)), 0.5);
        assert_eq!(normalize(3.0, (2.0, 2.0)), 0.0);
    }
}
