//! The summary of a batch: one [`Row`] per line, written as JSONL and CSV (both atomically:
//! a temporary file, then a rename), and read back by `--resume`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::explain::attention;
use crate::explain::relevancy::views::{self, Normalization};
use crate::session::Session;

/// The timings a row reports, in this order (seconds; the session's manifest names them).
pub const TIMINGS: [&str; 5] = ["encode_image", "prefill", "decode", "relevancy", "causal"];

/// What happened to one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The session was written.
    Ok,
    /// The line could not be run; `error` says why.
    Error,
}

impl Status {
    /// The spelling in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
        }
    }
}

/// One line of the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The line's id (also the session's file stem).
    pub id: String,
    /// 1-based line number in the questions file.
    pub line: usize,
    /// Whether the line ran.
    pub status: Status,
    /// Why it did not (empty when it did).
    pub error: String,
    /// The generated answer.
    pub answer: String,
    /// Generated tokens.
    pub tokens: usize,
    /// Image reliance by attention: the share of the answer tokens' attention on the image
    /// span, averaged over layers, heads and answer tokens (`explain::attention::image_share`).
    pub image_attention: Option<f32>,
    /// Image reliance by relevancy: the image's share of the answer tokens' decoder relevancy
    /// (self-removed rows, `explain::relevancy::views::reliance`), averaged; with `--relevancy`.
    pub image_relevancy: Option<f32>,
    /// Seconds spent on this line (generation, explanations and saving).
    pub seconds: f64,
    /// The session's stage timings, in seconds.
    pub timings: BTreeMap<String, f64>,
    /// With `--faithfulness`: the probability drop Δp of the first answer token when each
    /// map's top 20 % of patches are painted out, by catalogue map id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub faithfulness: BTreeMap<String, f32>,
}

impl Row {
    /// The row of a line that could not run.
    pub fn failed(id: &str, line: usize, error: String, seconds: f64) -> Row {
        Row {
            id: id.to_string(),
            line,
            status: Status::Error,
            error,
            answer: String::new(),
            tokens: 0,
            image_attention: None,
            image_relevancy: None,
            seconds,
            timings: BTreeMap::new(),
            faithfulness: BTreeMap::new(),
        }
    }

    /// The row of a session that was written; `answer` is its readable text.
    pub fn of_session(
        id: &str,
        line: usize,
        session: &Session,
        answer: String,
        seconds: f64,
    ) -> Row {
        Row {
            id: id.to_string(),
            line,
            status: Status::Ok,
            error: String::new(),
            answer,
            tokens: session.num_output(),
            image_attention: image_attention(session),
            image_relevancy: image_relevancy(session),
            seconds,
            timings: session
                .manifest
                .timings
                .iter()
                .filter(|(k, _)| TIMINGS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            faithfulness: BTreeMap::new(),
        }
    }
}

/// Mean over answer tokens of the attention image share (all layers and heads); `None` without
/// recorded attention rows.
fn image_attention(s: &Session) -> Option<f32> {
    let t = s.num_output();
    if t == 0 {
        return None;
    }
    let shares: Result<Vec<f32>, _> = (0..t).map(|t| attention::image_share(s, t, None)).collect();
    shares.ok().map(|v| v.iter().sum::<f32>() / t as f32)
}

/// Mean over the answer tokens holding relevancy of the image's share of it.
fn image_relevancy(s: &Session) -> Option<f32> {
    let shares: Vec<f32> = views::answer_reliance(s, Normalization::SelfRemoved)
        .into_iter()
        .flatten()
        .map(|r| r.image_share())
        .collect();
    (!shares.is_empty()).then(|| shares.iter().sum::<f32>() / shares.len() as f32)
}

/// Reads the rows of an earlier summary (`--resume`); a missing file is no rows, unreadable
/// lines are skipped (they are written again).
pub fn read_jsonl(path: &Path) -> Vec<Row> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The rows as JSON lines.
pub fn to_jsonl(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        // A Row holds only strings, numbers and a string map: serialisation cannot fail.
        out.push_str(&serde_json::to_string(row).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// The rows as CSV with a header: id, line, status, error, answer, tokens, image_attention,
/// image_relevancy, seconds, the [`TIMINGS`], then `dp:<map id>` for every map any row has a
/// faithfulness drop of (empty cells where a value is absent).
pub fn to_csv(rows: &[Row]) -> String {
    let maps: std::collections::BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.faithfulness.keys().map(String::as_str))
        .collect();
    let mut header = vec![
        "id",
        "line",
        "status",
        "error",
        "answer",
        "tokens",
        "image_attention",
        "image_relevancy",
        "seconds",
    ];
    header.extend(TIMINGS);
    let dp_names: Vec<String> = maps.iter().map(|m| format!("dp:{m}")).collect();
    header.extend(dp_names.iter().map(String::as_str));
    let mut out = header.join(",");
    out.push('\n');
    let number = |x: Option<f64>| x.map(|v| format!("{v:.6}")).unwrap_or_default();
    for r in rows {
        let mut cells = vec![
            csv_cell(&r.id),
            r.line.to_string(),
            r.status.name().to_string(),
            csv_cell(&r.error),
            csv_cell(&r.answer),
            r.tokens.to_string(),
            number(r.image_attention.map(f64::from)),
            number(r.image_relevancy.map(f64::from)),
            format!("{:.3}", r.seconds),
        ];
        cells.extend(TIMINGS.iter().map(|k| number(r.timings.get(*k).copied())));
        cells.extend(
            maps.iter()
                .map(|m| number(r.faithfulness.get(*m).map(|&v| f64::from(v)))),
        );
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// One CSV cell: quoted (quotes doubled) when it holds a comma, a quote or a line break.
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes `text` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, error: &str) -> Row {
        Row::failed(id, 3, error.to_string(), 0.5)
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        let csv = to_csv(&[row("x", "bad, very bad")]);
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].starts_with("id,line,status,error,answer,tokens,image_attention"));
        assert_eq!(lines[1], "x,3,error,\"bad, very bad\",,0,,,0.500,,,,,");
    }

    #[test]
    fn jsonl_round_trips() {
        let mut ok = row("y", "");
        ok.status = Status::Ok;
        ok.image_attention = Some(0.25);
        ok.timings.insert("decode".into(), 1.5);
        ok.faithfulness.insert("random".into(), 0.125);
        let rows = vec![row("x", "no image"), ok];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.jsonl");
        write_atomic(&path, &to_jsonl(&rows)).unwrap();
        assert_eq!(read_jsonl(&path), rows);
        assert!(read_jsonl(&dir.path().join("none.jsonl")).is_empty());
        let csv = to_csv(&rows);
        assert!(csv.lines().next().unwrap().ends_with(",causal,dp:random"));
        assert!(csv.lines().nth(1).unwrap().ends_with(",,"));
        assert!(csv.lines().nth(2).unwrap().ends_with(",0.125000"));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
    }
}
