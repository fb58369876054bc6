//! `report --region`: which of the session's image regions the report draws and prints.

use std::str::FromStr;

use crate::explain::catalogue::RegionMap;
use crate::session::RegionKind;

/// The image regions a report shows: every one (the default), or the one of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegionChoice {
    /// Every region, stacked in input order.
    #[default]
    All,
    /// The region of this kind only.
    Only(RegionKind),
}

/// A `--region` value that names no region kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown region {0:?} (choose base, highres, image or all)")]
pub struct RegionChoiceError(pub String);

impl FromStr for RegionChoice {
    type Err = RegionChoiceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "all" => RegionChoice::All,
            "base" => RegionChoice::Only(RegionKind::Base),
            "highres" => RegionChoice::Only(RegionKind::Highres),
            "image" => RegionChoice::Only(RegionKind::Image),
            other => return Err(RegionChoiceError(other.to_string())),
        })
    }
}

/// The session has no image region of the kind asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--region {asked}: this session has no such image region (it has {has}); choose one of those or all")]
pub struct MissingRegion {
    /// The kind asked for.
    pub asked: &'static str,
    /// The kinds it has, comma-separated (`none` without an image).
    pub has: String,
}

impl RegionChoice {
    /// Keeps the regions of `regions` the choice names; an error when it names a kind the
    /// session lacks.
    pub fn select(self, regions: Vec<RegionMap>) -> Result<Vec<RegionMap>, MissingRegion> {
        let RegionChoice::Only(kind) = self else {
            return Ok(regions);
        };
        if regions.iter().any(|m| m.kind == kind) {
            return Ok(regions.into_iter().filter(|m| m.kind == kind).collect());
        }
        let has: Vec<&str> = regions.iter().map(|m| m.kind.name()).collect();
        Err(MissingRegion {
            asked: kind.name(),
            has: if has.is_empty() {
                "none".into()
            } else {
                has.join(", ")
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::attention::Grid;

    fn map(kind: RegionKind, rows: usize) -> RegionMap {
        RegionMap {
            kind,
            rect: [0.0, 0.0, 4.0, 4.0],
            grid: Grid {
                rows,
                cols: 1,
                values: vec![0.0; rows],
            },
        }
    }

    #[test]
    fn choices_parse_select_and_refuse() {
        assert_eq!("all".parse(), Ok(RegionChoice::All));
        assert_eq!(
            "highres".parse(),
            Ok(RegionChoice::Only(RegionKind::Highres))
        );
        let e = "tiles".parse::<RegionChoice>().unwrap_err().to_string();
        assert!(e.contains("base, highres, image or all"), "{e}");
        let two = vec![map(RegionKind::Base, 2), map(RegionKind::Highres, 3)];
        assert_eq!(RegionChoice::All.select(two.clone()).unwrap(), two);
        let base = RegionChoice::Only(RegionKind::Base).select(two.clone());
        assert_eq!(base.unwrap(), vec![two[0].clone()]);
        let e = RegionChoice::Only(RegionKind::Image)
            .select(two)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--region image: this session has no such image region (it has base, highres); choose one of those or all"
        );
    }
}
