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
//!
//! Files are reused: a settled journal goes back to its process's [`JournalPool`] emptied
//! (its lock still held) and the next operation writes there, so an operation creates and
//! deletes no file. On ext4 without a journal (this project's test machines) every inode
//! allocation skips the inodes deleted in the last seconds, one inode-table lookup each, so a
//! file made and deleted per operation made every later file creation slower the faster
//! operations came: 0.7 ms of a 3 ms attach through the daemon. An empty journal is a spare:
//! nothing to settle, and one a dead process left is simply deleted.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::step::Step;

pub struct Journal {
    file: File,
    path: PathBuf,
    /// Where it goes when settled (journals this process created); `None`: deleted.
    pool: Option<Arc<JournalPool>>,
}

/// A process's spare journal files: empty, open, locked by it. Dropped (the engine closed),
/// they are deleted.
#[derive(Default)]
pub struct JournalPool {
    spares: Mutex<Vec<(File, PathBuf)>>,
}

/// Spares kept at most; beyond, a settled journal is deleted.
const SPARES: usize = 32;

impl JournalPool {
    /// How many spares are kept now.
    pub fn spares(&self) -> usize {
        self.spares.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn take(&self) -> Option<(File, PathBuf)> {
        self.spares.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Keep `file` (emptied) for the next journal, or delete it.
    fn give(&self, mut file: File, path: PathBuf) {
        let kept = file.set_len(0).and_then(|_| file.rewind()).is_ok() && {
            let mut v = self.spares.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() < SPARES {
                v.push((file, path.clone()));
                true
            } else {
                false
            }
        };
        if !kept {
            let _ = std::fs::remove_file(&path);
        }
    }
}

impl Drop for JournalPool {
    fn drop(&mut self) {
        for (_, path) in self
            .spares
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = std::fs::remove_file(path);
        }
    }
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
        Self::create_in(None, path, header)
    }

    /// [`Journal::create`], in a spare of `pool` when it has one (`path` is then unused), and
    /// given back to it when settled.
    pub fn create_in(
        pool: Option<&Arc<JournalPool>>,
        path: PathBuf,
        header: &serde_json::Value,
    ) -> std::io::Result<Journal> {
        let (mut file, path) = match pool.and_then(|p| p.take()) {
            Some(spare) => spare,
            None => {
                if let Some(d) = path.parent() {
                    std::fs::create_dir_all(d)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .read(true)
                    .open(&path)?;
                lock(&file, true)?;
                (file, path)
            }
        };
        let r = writeln!(file, "{header}");
        if let Err(e) = r {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Journal {
            file,
            path,
            pool: pool.cloned(),
        })
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
            pool: None,
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

    /// The operation is settled: the journal goes back to its pool, emptied, or is deleted
    /// (and its lock dropped).
    pub fn remove(self) {
        match self.pool {
            Some(pool) => pool.give(self.file, self.path),
            None => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    /// Is this journal a spare: empty, no operation's (what a process killed with spares
    /// leaves)?
    pub fn is_spare(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.len() == 0)
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

    #[test]
    fn a_settled_journal_is_reused_empty_and_locked_and_spares_go_with_the_pool() {
        let dir = std::env::temp_dir().join(format!("weft-journal-{}", crate::model::new_id()));
        let pool = Arc::new(JournalPool::default());
        let step = Step::DelNetns { pin: "/a".into() };
        let mut j = Journal::create_in(
            Some(&pool),
            dir.join("1.json"),
            &serde_json::json!({"op": 1}),
        )
        .unwrap();
        j.append(&step).unwrap();
        j.append(&step).unwrap();
        let first = j.path().to_path_buf();
        j.remove();
        // Kept, empty, still locked by its owner: no one may claim it; not an operation.
        assert_eq!(pool.spares(), 1);
        assert_eq!(std::fs::metadata(&first).unwrap().len(), 0);
        assert!(Journal::claim(&first).unwrap().is_none());
        // The next journal is written into it from the start, not after the old length.
        let j = Journal::create_in(
            Some(&pool),
            dir.join("2.json"),
            &serde_json::json!({"op": 2}),
        )
        .unwrap();
        assert_eq!(j.path(), first);
        assert!(!dir.join("2.json").exists());
        let (h, steps) = read(&first).unwrap();
        assert_eq!((h["op"].as_i64(), steps.len()), (Some(2), 0));
        assert!(!j.is_spare());
        j.remove();
        // Its owner gone (the pool dropped with the engine): the spares are deleted.
        drop(pool);
        assert!(!first.exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
