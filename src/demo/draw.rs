//! Rasterising the demo shapes and backgrounds.
//!
//! Shapes are tested at pixel centres, without anti-aliasing, so that a pixel either belongs to
//! an object or not and object masks are exact.

use image::{Rgb, RgbImage};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The shapes a demo scene can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// A disc.
    Circle,
    /// An axis-aligned square.
    Square,
    /// An upward equilateral triangle.
    Triangle,
    /// A five-pointed star, one point up.
    Star,
    /// A plus sign.
    Cross,
}

impl Shape {
    /// Every shape, in a fixed order.
    pub const ALL: [Shape; 5] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Star,
        Shape::Cross,
    ];

    /// The word used in questions and answers.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Cross => "cross",
        }
    }

    /// Whether the point (dx, dy), relative to the shape's centre (y down), lies inside a shape
    /// of circumradius `r`.
    pub fn contains(self, dx: f32, dy: f32, r: f32) -> bool {
        match self {
            Shape::Circle => dx * dx + dy * dy <= r * r,
            Shape::Square => dx.abs() <= 0.8 * r && dy.abs() <= 0.8 * r,
            Shape::Cross => {
                let arm = 0.34 * r;
                (dx.abs() <= arm && dy.abs() <= r) || (dy.abs() <= arm && dx.abs() <= r)
            }
            Shape::Triangle => {
                // Vertices at angles −90°, 30°, 150°, shifted down so the box is centred.
                let shift = 0.25 * r;
                let h = 0.866_025_4 * r;
                let v = [
                    (0.0, -r + shift),
                    (h, 0.5 * r + shift),
                    (-h, 0.5 * r + shift),
                ];
                in_polygon(&v, dx, dy)
            }
            Shape::Star => {
                let mut v = [(0f32, 0f32); 10];
                for (i, p) in v.iter_mut().enumerate() {
                    let rr = if i % 2 == 0 { r } else { 0.45 * r };
                    let a = -std::f32::consts::FRAC_PI_2 + i as f32 * std::f32::consts::PI / 5.0;
                    *p = (rr * a.cos(), rr * a.sin() + 0.1 * r);
                }
                in_polygon(&v, dx, dy)
            }
        }
    }
}

/// Even-odd point-in-polygon test.
fn in_polygon(v: &[(f32, f32)], x: f32, y: f32) -> bool {
    let mut inside = false;
    let mut j = v.len() - 1;
    for i in 0..v.len() {
        let (xi, yi) = v[i];
        let (xj, yj) = v[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// The colours a demo object can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// Red.
    Red,
    /// Green.
    Green,
    /// Blue.
    Blue,
    /// Yellow.
    Yellow,
    /// Purple.
    Purple,
    /// Orange.
    Orange,
    /// White.
    White,
}

impl Color {
    /// Every colour, in a fixed order.
    pub const ALL: [Color; 7] = [
        Color::Red,
        Color::Green,
        Color::Blue,
        Color::Yellow,
        Color::Purple,
        Color::Orange,
        Color::White,
    ];

    /// The word used in questions and answers.
    pub fn name(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
            Color::Yellow => "yellow",
            Color::Purple => "purple",
            Color::Orange => "orange",
            Color::White => "white",
        }
    }

    /// The nominal RGB value (objects get a small random jitter around it).
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [220, 35, 35],
            Color::Green => [40, 190, 60],
            Color::Blue => [45, 90, 235],
            Color::Yellow => [235, 220, 45],
            Color::Purple => [160, 60, 210],
            Color::Orange => [245, 140, 25],
            Color::White => [240, 240, 240],
        }
    }
}

/// The background texture of a scene. Backgrounds are dark so that every object colour stands
/// out (channels stay below 110).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Background {
    /// One flat colour.
    Plain,
    /// A flat colour with per-pixel noise.
    Noise,
    /// Two alternating tones in stripes (horizontal, vertical or diagonal).
    Stripes,
}

/// Paints a random background of the given kind.
pub fn paint_background<R: Rng>(rng: &mut R, kind: Background, size: u32) -> RgbImage {
    let base: [i32; 3] = {
        let level = rng.gen_range(10..60);
        [0, 1, 2].map(|_| level + rng.gen_range(-8..=8))
    };
    let mut img = RgbImage::new(size, size);
    match kind {
        Background::Plain => {
            for p in img.pixels_mut() {
                *p = to_rgb(base);
            }
        }
        Background::Noise => {
            let amp = rng.gen_range(4..=14);
            for p in img.pixels_mut() {
                let n = rng.gen_range(-amp..=amp);
                *p = to_rgb(base.map(|c| c + n));
            }
        }
        Background::Stripes => {
            let delta = rng.gen_range(12..=30);
            let other = base.map(|c| c + delta);
            let period = rng.gen_range(4..=8);
            let orient = rng.gen_range(0..3);
            for (x, y, p) in img.enumerate_pixels_mut() {
                let t = match orient {
                    0 => y,
                    1 => x,
                    _ => x + y,
                };
                *p = to_rgb(if (t / period) % 2 == 0 { base } else { other });
            }
        }
    }
    img
}

fn to_rgb(c: [i32; 3]) -> Rgb<u8> {
    Rgb(c.map(|v| v.clamp(0, 255) as u8))
}
