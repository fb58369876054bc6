//! The questions file of `lvlmscope batch`: one JSON object per line, `{"image", "prompt"[,
//! "id"]}`, image paths relative to the file's folder. Every line becomes an [`Entry`]: a job to
//! run, or the one-sentence reason it cannot run; the file as a whole never fails on a bad line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One non-blank line of the questions file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// 0-based index of the line in the file (what `--shard` counts).
    pub index: usize,
    /// The file-name-safe id: the line's `id`, or its 1-based line number.
    pub id: String,
    /// The work, or why the line cannot be run.
    pub job: Result<Job, String>,
}

/// What one good line asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The image, resolved against the questions file's folder.
    pub image: PathBuf,
    /// The question.
    pub prompt: String,
}

/// Which lines a process takes: every `count`-th line starting at `index` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's share, in `0..count`.
    pub index: usize,
    /// How many processes share the file.
    pub count: usize,
}

impl Shard {
    /// The whole file.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether line `line` (0-based) belongs to this shard.
    pub fn takes(&self, line: usize) -> bool {
        line % self.count == self.index
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// Parses `I/N` with `0 ≤ I < N`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard takes I/N with 0 ≤ I < N (for example 0/4), not {s:?}");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// A string made safe as a file name: ASCII letters, digits, `-`, `_` and `.` are kept, every
/// other character becomes `_`; leading dots are dropped (no hidden files, no `..`), and the
/// result is at most 100 bytes. Empty when nothing usable is left.
pub fn sanitize_id(id: &str) -> String {
    let mapped: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches('.');
    trimmed.chars().take(100).collect()
}

/// Parses the questions file's text; `base` is the folder image paths are relative to. Blank
/// lines are skipped. A later line whose id repeats an earlier one's is an error (its session
/// would overwrite the first), whichever shard it falls in.
pub fn parse(text: &str, base: &Path) -> Vec<Entry> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (id, job) = parse_line(line, index, base);
        let job = if seen.insert(id.clone()) {
            job
        } else {
            Err(format!("the id {id:?} was already used by an earlier line"))
        };
        out.push(Entry { index, id, job });
    }
    out
}

/// The id and the job of one line.
fn parse_line(line: &str, index: usize, base: &Path) -> (String, Result<Job, String>) {
    let number = (index + 1).to_string();
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return (number, Err(format!("the line is not valid JSON: {e}"))),
    };
    let Some(object) = value.as_object() else {
        return (
            number,
            Err("the line is not a JSON object with \"image\" and \"prompt\"".into()),
        );
    };
    let id = match object.get("id") {
        None | Some(Value::Null) => Ok(number.clone()),
        Some(Value::String(s)) => match sanitize_id(s) {
            safe if safe.is_empty() => Err(format!(
                "the id {s:?} has no character usable in a file name"
            )),
            safe => Ok(safe),
        },
        Some(Value::Number(n)) => Ok(sanitize_id(&n.to_string())),
        Some(_) => Err("\"id\" must be a string or a number".to_string()),
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => return (number, Err(e)),
    };
    (id, job_of(object, base))
}

/// The image and prompt of a parsed line, checked.
fn job_of(object: &serde_json::Map<String, Value>, base: &Path) -> Result<Job, String> {
    let image = match object.get("image") {
        Some(Value::String(s)) if !s.trim().is_empty() => base.join(s),
        Some(Value::String(_)) => return Err("\"image\" is empty".into()),
        Some(_) => return Err("\"image\" must be a string (a path)".into()),
        None => return Err("the line has no \"image\"".into()),
    };
    let prompt = match object.get("prompt") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err("\"prompt\" is empty".into()),
        Some(_) => return Err("\"prompt\" must be a string".into()),
        None => return Err("the line has no \"prompt\"".into()),
    };
    if !image.is_file() {
        return Err(format!("the image {} does not exist", image.display()));
    }
    Ok(Job { image, prompt })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s, Shard { index: 1, count: 3 });
        let taken: Vec<usize> = (0..8).filter(|&l| s.takes(l)).collect();
        assert_eq!(taken, [1, 4, 7]);
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad} accepted");
        }
        assert!(Shard::ALL.takes(5));
    }

    #[test]
    fn ids_are_safe_file_names() {
        assert_eq!(sanitize_id("q 1/../x"), "q_1_.._x");
        assert_eq!(sanitize_id("../etc"), "_etc");
        assert_eq!(sanitize_id("..."), "");
        assert_eq!(sanitize_id("été-3"), "_t_-3");
        assert_eq!(sanitize_id(&"a".repeat(300)).len(), 100);
    }

    #[test]
    fn lines_become_entries_with_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        let text = [
            r#"{"image": "a.png", "prompt": "What?", "id": "first"}"#,
            "",
            r#"{"image": "a.png", "prompt": "Again?"}"#,
            r#"{"image": "missing.png", "prompt": "Where?"}"#,
            r#"{"image": "a.png", "prompt": "  "}"#,
            r#"{"image": "a.png", "prompt": "Dup", "id": "first"}"#,
            "not json",
            r#"[1, 2]"#,
            r#"{"image": "a.png", "prompt": "n", "id": 7}"#,
        ]
        .join("\n");
        let e = parse(&text, dir.path());
        let ids: Vec<&str> = e.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["first", "3", "4", "5", "first", "7", "8", "7"]);
        assert_eq!(e[0].job.as_ref().unwrap().image, dir.path().join("a.png"));
        assert!(e[1].job.is_ok());
        assert!(e[2].job.as_ref().unwrap_err().contains("does not exist"));
        assert!(e[3].job.as_ref().unwrap_err().contains("empty"));
        assert!(e[4].job.as_ref().unwrap_err().contains("already used"));
        assert!(e[5].job.as_ref().unwrap_err().contains("not valid JSON"));
        assert!(e[6].job.as_ref().unwrap_err().contains("JSON object"));
        // id 7 given as a number repeats line 7's default id
        assert!(e[7].job.as_ref().unwrap_err().contains("already used"));
        assert_eq!(e[1].index, 2);
    }
}
