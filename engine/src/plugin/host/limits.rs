//! A plugin instance's memory ceiling ([`Limits`]): every linear memory and table it grows,
//! together, against what it was granted.

use super::*;

/// The memory ceiling of one plugin instance: all its linear memories and tables together
/// (a component of many core modules does not get the grant once per module). Growing past it
/// traps, and says so ([`Limits::denied`]), so the error is told by a flag, not by message text.
pub struct Limits {
    ceiling: usize,
    used: usize,
    pub denied: bool,
}

impl Limits {
    /// A ceiling of `bytes` (the plugin's memory grant), nothing used yet.
    pub fn new(bytes: u64) -> Limits {
        Limits {
            ceiling: usize::try_from(bytes).unwrap_or(usize::MAX),
            used: 0,
            denied: false,
        }
    }

    fn grow(&mut self, bytes: usize) -> wasmtime::Result<bool> {
        match self.used.checked_add(bytes).filter(|u| *u <= self.ceiling) {
            Some(u) => {
                self.used = u;
                Ok(true)
            }
            None => {
                self.denied = true;
                Err(wasmtime::Error::msg(
                    "the plugin's memory ceiling was reached",
                ))
            }
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current) * std::mem::size_of::<usize>())
    }
    fn instances(&self) -> usize {
        // A component from componentize-py (CPython on WASI, linked as many modules) needs
        // ~20 core instances; a Rust plugin needs a handful.
        64
    }
    fn memories(&self) -> usize {
        16
    }
    fn tables(&self) -> usize {
        64
    }
}
