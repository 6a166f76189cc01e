//! What the benchmarks share: percentiles, formatting, and scratch directories whose pinned
//! namespaces are unpinned and whose files are removed when dropped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

pub fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("weft-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    /// A namespace pinned inside the scratch directory.
    pub fn ns(&self, name: &str) -> PathBuf {
        let pin = self.dir.join(name);
        weft::net::ns::create_pinned(&pin, || ()).unwrap();
        pin
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            for m in mi.lines().filter_map(|l| l.split_whitespace().nth(4)) {
                if m.starts_with(self.dir.to_str().unwrap()) {
                    let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
