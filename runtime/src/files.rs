//! Files written whole or not at all. A write goes to a temporary file beside its target,
//! `.NAME.tmp-HOST-PID`, which is synced and renamed over the target, so that the target is
//! always its old self or the whole new file. A write cut short by `kill -9` leaves only the
//! temporary file; the next write in that folder removes it once its process is gone (never a
//! live process's, nor one of another host's, which this host cannot see).

use std::io;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes `path` through `write`, which is handed the temporary path to fill; on failure the
/// error names `path` and nothing is left behind.
pub(crate) fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> io::Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::config("path", format!("{} names no file", path.display())))?;
    remove_stale_temps(&dir);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        host(),
        std::process::id()
    ));
    let written = write(&tmp)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // The rename is durable once the directory entry is; a failure here loses nothing.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub(crate) fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| std::fs::write(tmp, bytes))
}

/// Removes the temporary files in `dir` whose writer, a process of this host, has died.
pub(crate) fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let here = host();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((writer_host, pid)) = name.to_str().and_then(temp_writer) else {
            continue;
        };
        if writer_host.is_none_or(|h| h == here) && !alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The writer of a temporary file `.NAME.tmp-HOST-PID` (or, as fulmen 0.1 named them,
/// `.NAME.tmp-PID`): its host, when named, and its process id.
fn temp_writer(name: &str) -> Option<(Option<&str>, i32)> {
    let rest = name.strip_prefix('.')?;
    let (_, writer) = rest.rsplit_once(".tmp-")?;
    match writer.rsplit_once('-') {
        Some((host, pid)) => Some((Some(host), pid.parse().ok()?)),
        None => Some((None, writer.parse().ok()?)),
    }
}

/// Whether process `pid` of this host exists (one of another user's counts).
fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// This host's name, with the characters a file name cannot hold replaced.
fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = if r == 0 {
        String::from_utf8_lossy(&buf[..len]).into_owned()
    } else {
        String::from("localhost")
    };
    name.replace(['/', '-'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hparams.yaml");
        std::fs::write(&path, "old").unwrap();
        write_bytes(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let failed = write_atomic(&path, |tmp| {
            std::fs::write(tmp, "half")?;
            Err(io::Error::other("disk full"))
        });
        let err = failed.unwrap_err().to_string();
        assert!(
            err.contains("hparams.yaml") && err.contains("disk full"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn leftovers_of_dead_processes_go_and_live_or_foreign_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = std::process::id();
        let here = host();
        let names = [
            format!(".last.ckpt.tmp-{here}-{dead}"),
            format!(".last.ckpt.tmp-{dead}"),
            format!(".last.ckpt.tmp-{here}-{live}"),
            format!(".last.ckpt.tmp-another_node-{dead}"),
            format!("epoch={dead}.ckpt"),
        ];
        for n in &names {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        remove_stale_temps(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut kept = vec![names[2].clone(), names[3].clone(), names[4].clone()];
        kept.sort();
        assert_eq!(left, kept);
    }

    #[test]
    fn temp_names_parse_with_and_without_a_host() {
        assert_eq!(
            temp_writer(".a.ckpt.tmp-node1-42"),
            Some((Some("node1"), 42))
        );
        assert_eq!(temp_writer(".a.ckpt.tmp-42"), Some((None, 42)));
        assert_eq!(temp_writer("a.ckpt"), None);
        assert_eq!(temp_writer(".a.ckpt.tmp-node1-x"), None);
    }
}
