//! A plugin's `kv` (its private space in the operation's store transaction, under a quota),
//! `log` (tracing, bounded per call) and `config` (what it was given at install).

use super::*;

/// Largest kv value and key a plugin may store.
const KV_VALUE_MAX: usize = 1 << 20;
const KV_KEY_MAX: usize = 1024;
/// Most entries and bytes one list-prefix returns.
const KV_LIST_MAX: usize = 4096;
const KV_LIST_BYTES: usize = 4 << 20;
/// Log lines per call, and characters per line.
const LOG_LINES: u32 = 64;
const LOG_CHARS: usize = 1024;

impl HostState {
    // ------------------------------------------------------------------------ kv

    fn kv_key(&self, key: &str) -> HostResult<Vec<u8>> {
        if key.len() > KV_KEY_MAX || key.contains('\0') {
            return Err(HostError::InvalidArgument(format!(
                "kv keys are at most {KV_KEY_MAX} bytes, without NUL"
            )));
        }
        // A cluster-wide space's keys start with NUL (no local space's can): the split store
        // keeps them in etcd.
        let mut k = if self.plugin.grants.kv_global {
            vec![0]
        } else {
            vec![]
        };
        k.extend_from_slice(self.plugin.grants.kv_space.as_bytes());
        k.push(0);
        k.extend_from_slice(key.as_bytes());
        Ok(k)
    }

    fn kv(&mut self) -> HostResult<&mut (dyn WriteTxn + 'static)> {
        self.store
            .get()
            .ok_or_else(|| HostError::Unsupported("kv is not available during this call".into()))
    }

    fn usage_key(&self) -> String {
        if self.plugin.grants.kv_global {
            format!("cluster/kvusage/{}", self.plugin.grants.kv_space)
        } else {
            format!("kvusage/{}", self.plugin.grants.kv_space)
        }
    }

    /// Account `delta` bytes to the space; refuse past its quota.
    fn account(&mut self, delta: i64) -> HostResult<()> {
        let key = self.usage_key();
        let quota = self.plugin.grants.kv_quota;
        let space = self.plugin.grants.kv_space.clone();
        let store = self.kv()?;
        let used: u64 = store
            .get(Table::Meta, key.as_bytes())
            .map_err(store_error)?
            .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
            .unwrap_or(0);
        let now = (used as i64 + delta).max(0) as u64;
        if delta > 0 && now > quota {
            return Err(HostError::Exhausted(format!(
                "kv space {space} would hold {now} bytes, over its quota of {quota} (grant kv-quota=…)"
            )));
        }
        store
            .put(Table::Meta, key.as_bytes(), now.to_string().as_bytes())
            .map_err(store_error)
    }

    pub fn kv_get(&mut self, key: &str) -> HostResult<Option<Vec<u8>>> {
        let k = self.kv_key(key)?;
        let v = self.kv()?.get(Table::PluginKv, &k).map_err(store_error)?;
        self.hand(v.as_ref().map_or(0, Vec::len))?;
        Ok(v)
    }

    pub fn kv_put(&mut self, key: &str, value: Vec<u8>) -> HostResult<()> {
        if value.len() > KV_VALUE_MAX {
            return Err(HostError::InvalidArgument(format!(
                "kv values are at most {KV_VALUE_MAX} bytes"
            )));
        }
        let k = self.kv_key(key)?;
        let old = self.kv()?.get(Table::PluginKv, &k).map_err(store_error)?;
        let delta = (k.len() + value.len()) as i64
            - old
                .as_ref()
                .map(|o| (k.len() + o.len()) as i64)
                .unwrap_or(0);
        self.account(delta)?;
        self.kv()?
            .put(Table::PluginKv, &k, &value)
            .map_err(store_error)
    }

    pub fn kv_delete(&mut self, key: &str) -> HostResult<bool> {
        let k = self.kv_key(key)?;
        let old = self.kv()?.get(Table::PluginKv, &k).map_err(store_error)?;
        let Some(old) = old else { return Ok(false) };
        self.account(-((k.len() + old.len()) as i64))?;
        self.kv()?.delete(Table::PluginKv, &k).map_err(store_error)
    }

    /// Count what is handed to the plugin against its `inbound` grant.
    fn hand(&self, bytes: usize) -> HostResult<()> {
        if self.inbound.take(bytes) {
            Ok(())
        } else {
            Err(HostError::Exhausted(self.inbound.refusal()))
        }
    }

    pub fn kv_list(&mut self, prefix: &str) -> HostResult<Vec<(String, Vec<u8>)>> {
        let k = self.kv_key(prefix)?;
        let skip =
            self.plugin.grants.kv_space.len() + 1 + usize::from(self.plugin.grants.kv_global);
        let rows = self.kv()?.scan(Table::PluginKv, &k).map_err(store_error)?;
        let bytes: usize = rows.iter().map(|(k, v)| k.len() + v.len()).sum();
        if rows.len() > KV_LIST_MAX || bytes > KV_LIST_BYTES {
            return Err(HostError::Exhausted(format!(
                "list-prefix {prefix:?} would return {} entries ({bytes} bytes), over {KV_LIST_MAX} entries or {KV_LIST_BYTES} bytes: use a longer prefix",
                rows.len()
            )));
        }
        self.hand(bytes)?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k[skip..]).into_owned(), v))
            .collect())
    }

    pub fn kv_cas(
        &mut self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> HostResult<bool> {
        if new.as_ref().is_some_and(|v| v.len() > KV_VALUE_MAX) {
            return Err(HostError::InvalidArgument(format!(
                "kv values are at most {KV_VALUE_MAX} bytes"
            )));
        }
        let k = self.kv_key(key)?;
        let cur = self.kv()?.get(Table::PluginKv, &k).map_err(store_error)?;
        if cur != expected {
            return Ok(false);
        }
        let size =
            |v: &Option<Vec<u8>>| v.as_ref().map(|v| (k.len() + v.len()) as i64).unwrap_or(0);
        self.account(size(&new) - size(&cur))?;
        match new {
            Some(v) => self
                .kv()?
                .put(Table::PluginKv, &k, &v)
                .map_err(store_error)?,
            None => {
                self.kv()?
                    .delete(Table::PluginKv, &k)
                    .map_err(store_error)?;
            }
        }
        Ok(true)
    }

    // ----------------------------------------------------------------------- log

    pub fn log_line(&mut self, level: tracing::Level, message: &str) {
        self.logged += 1;
        if self.logged > LOG_LINES + 1 {
            return;
        }
        let p = &self.plugin.name;
        if self.logged == LOG_LINES + 1 {
            tracing::warn!(plugin = %p, "further log lines of this call suppressed (more than {LOG_LINES})");
            return;
        }
        let m = self.plugin.tell(message, LOG_CHARS);
        match level {
            tracing::Level::TRACE => tracing::trace!(plugin = %p, "{m}"),
            tracing::Level::DEBUG => tracing::debug!(plugin = %p, "{m}"),
            tracing::Level::INFO => tracing::info!(plugin = %p, "{m}"),
            tracing::Level::WARN => tracing::warn!(plugin = %p, "{m}"),
            tracing::Level::ERROR => tracing::error!(plugin = %p, "{m}"),
        }
    }

    // -------------------------------------------------------------------- config

    /// A config value; none once the call has been handed its `inbound` bytes (the WIT call
    /// has no error to say so: the call's error does).
    pub fn config_get(&self, key: &str) -> Option<String> {
        let v = self.plugin.config.get(key)?;
        self.hand(v.value.len()).ok()?;
        Some(v.value.clone())
    }

    pub fn config_keys(&self) -> Vec<String> {
        self.plugin.config.keys().cloned().collect()
    }
}
