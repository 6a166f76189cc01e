//! The journal of an operation in flight: a file under the run dir holding a header (what the
//! operation is and how to tell whether it committed — the engine's business, opaque here)
//! and the inverse of every kernel step, written *before* the step so that a process killed
//! right after the kernel acted leaves enough behind to undo it.
//!
//! The owning process holds an exclusive `flock` on its journal for the operation's life. The
//! kernel drops that lock when the process dies, so a journal that can be locked belongs to
//! an operation nobody is running any more ([`Journal::claim`]); one that cannot belongs to a
//! live operation of another process and is left alone.
//!
//! No fsync: the run dir has the lifetime of the kernel objects the journal describes (a
//! reboot wipes both). Write errors are errors: a step whose inverse could not be journaled
//! is not applied.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::step::Step;

pub struct Journal {
    file: File,
    path: PathBuf,
}

fn lock(f: &File, wait: bool) -> std::io::Result<bool> {
    let op = libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB };
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

impl Journal {
    /// Start a journal at `path` (a new file), locked, with `header` as its first line.
    pub fn create(path: PathBuf, header: &serde_json::Value) -> std::io::Result<Journal> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .read(true)
            .open(&path)?;
        lock(&file, true)?;
        let r = writeln!(file, "{header}");
        if let Err(e) = r {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Journal { file, path })
    }

    /// Take over the journal of an operation whose process is gone. `None` while a live
    /// process still holds it.
    pub fn claim(path: &Path) -> std::io::Result<Option<Journal>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)?;
        if !lock(&file, false)? {
            return Ok(None);
        }
        Ok(Some(Journal {
            file,
            path: path.to_path_buf(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record the inverse of a step about to be applied.
    pub fn append(&mut self, step: &Step) -> std::io::Result<()> {
        let s = serde_json::to_string(step).map_err(std::io::Error::other)?;
        writeln!(self.file, "{s}")
    }

    /// The last appended inverse is void: its step failed and changed nothing.
    pub fn retract(&mut self) -> std::io::Result<()> {
        writeln!(self.file, "-")
    }

    /// The operation is settled: drop the journal (and its lock).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// (header, inverse steps in apply order) of a journal.
    pub fn read(&self) -> std::io::Result<(serde_json::Value, Vec<Step>)> {
        read(&self.path)
    }
}

/// Parse a journal file. Lines that do not parse (a line cut short by a crash) are skipped.
pub fn read(path: &Path) -> std::io::Result<(serde_json::Value, Vec<Step>)> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    let mut steps = Vec::new();
    for l in lines {
        if l == "-" {
            steps.pop();
        } else if let Ok(s) = serde_json::from_str(l) {
            steps.push(s);
        }
    }
    Ok((header, steps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NsRef;

    #[test]
    fn lines_retractions_and_claims() {
        let dir = std::env::temp_dir().join(format!("weft-journal-{}", crate::model::new_id()));
        let path = dir.join("op.json");
        let mut j = Journal::create(path.clone(), &serde_json::json!({"op": "x"})).unwrap();
        let a = Step::DelNetns { pin: "/a".into() };
        let b = Step::DelLink {
            ns: NsRef::Host,
            name: "b".into(),
            peer: None,
        };
        j.append(&a).unwrap();
        j.append(&b).unwrap();
        j.retract().unwrap();
        let (h, steps) = read(&path).unwrap();
        assert_eq!(h["op"], "x");
        assert_eq!(steps, vec![a]);
        // Held by its (live) owner: nobody else may take it over. flock locks belong to the
        // open file, so a second open in this process is refused just like another process.
        assert!(Journal::claim(&path).unwrap().is_none());
        drop(j);
        let c = Journal::claim(&path).unwrap().expect("owner gone");
        c.remove();
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
