//! Writing embedded files to a cache folder once, atomically.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// One embedded file: its name inside the folder and its bytes.
pub type EmbeddedFile = (&'static str, &'static [u8]);

/// The folder lvlmscope caches things in: `$XDG_CACHE_HOME/lvlmscope`, else
/// `$HOME/.cache/lvlmscope`, else `<temp dir>/lvlmscope`.
pub fn cache_root() -> PathBuf {
    let from_env = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(xdg) = from_env("XDG_CACHE_HOME") {
        xdg.join("lvlmscope")
    } else if let Some(home) = from_env("HOME") {
        home.join(".cache").join("lvlmscope")
    } else {
        std::env::temp_dir().join("lvlmscope")
    }
}

/// FNV-1a (64 bit) over the names, lengths and contents of `files`, as 16 hex digits.
pub fn content_hash(files: &[EmbeddedFile]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, bytes) in files {
        eat(name.as_bytes());
        eat(&(bytes.len() as u64).to_le_bytes());
        eat(bytes);
    }
    format!("{h:016x}")
}

/// Whether `dir` holds every file with the expected length.
fn is_complete(dir: &Path, files: &[EmbeddedFile]) -> bool {
    files.iter().all(|(name, bytes)| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
    })
}

/// Writes `files` into `root/<prefix>-<hash>` unless a complete copy is already there, and
/// returns that folder. The files are written to a temporary sibling folder first and renamed
/// into place, so a reader never sees a half-written folder, and concurrent callers agree.
pub fn materialise(
    root: &Path,
    prefix: &str,
    files: &[EmbeddedFile],
    hash: &str,
) -> io::Result<PathBuf> {
    let dir = root.join(format!("{prefix}-{hash}"));
    if is_complete(&dir, files) {
        return Ok(dir);
    }
    std::fs::create_dir_all(root)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = root.join(format!(
        ".{prefix}-{hash}.tmp-{}-{nanos}",
        std::process::id()
    ));
    let written = (|| {
        std::fs::create_dir_all(&tmp)?;
        for (name, bytes) in files {
            std::fs::write(tmp.join(name), bytes)?;
        }
        Ok::<(), io::Error>(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() && !is_complete(&dir, files) {
        // A damaged earlier copy: replace it.
        let _ = std::fs::remove_dir_all(&dir);
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            if is_complete(&dir, files) {
                // Another process won the race; its copy is as good as ours.
                Ok(dir)
            } else {
                Err(e)
            }
        }
    }
}
