//! An in-memory backend for tests and benchmarks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{not_found, Backend, Capabilities, FileType};
use crate::error::{Error, Result};

type Objects = HashMap<(FileType, String), Arc<Vec<u8>>>;

/// A backend that keeps every object in a map.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    objects: Arc<Mutex<Objects>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> MutexGuard<'_, Objects> {
        // A panic while holding the lock cannot leave the map half-updated: every mutation is one call.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces an object's bytes (for fault-injection tests only: real backends never overwrite).
    pub fn corrupt(&self, t: FileType, name: &str, data: Vec<u8>) {
        self.map().insert((t, name.to_string()), Arc::new(data));
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".to_string()
    }

    fn create(&self) -> Result<()> {
        if self.map().contains_key(&(FileType::Config, String::new())) {
            return Err(Error::AlreadyExists {
                file_type: FileType::Config,
                name: "config".into(),
            });
        }
        Ok(())
    }

    fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
        Ok(self
            .map()
            .iter()
            .filter(|((ft, _), _)| *ft == t)
            .map(|((_, n), v)| (n.clone(), v.len() as u64))
            .collect())
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        self.map()
            .get(&(t, name.to_string()))
            .map(|v| v.to_vec())
            .ok_or_else(|| not_found(t, name))
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let v = self
            .map()
            .get(&(t, name.to_string()))
            .cloned()
            .ok_or_else(|| not_found(t, name))?;
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= v.len() as u64)
            .ok_or_else(|| {
                Error::integrity(
                    t.path_of(name),
                    format!("range {offset}+{len} beyond its {} bytes", v.len()),
                )
            })?;
        Ok(v[offset as usize..end as usize].to_vec())
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        let mut map = self.map();
        let key = (t, name.to_string());
        if map.contains_key(&key) {
            return Err(Error::AlreadyExists {
                file_type: t,
                name: name.to_string(),
            });
        }
        map.insert(key, Arc::new(data.to_vec()));
        Ok(())
    }

    fn remove(&self, t: FileType, name: &str) -> Result<()> {
        self.map()
            .remove(&(t, name.to_string()))
            .map(|_| ())
            .ok_or_else(|| not_found(t, name))
    }

    fn stat(&self, t: FileType, name: &str) -> Result<u64> {
        self.map()
            .get(&(t, name.to_string()))
            .map(|v| v.len() as u64)
            .ok_or_else(|| not_found(t, name))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable_writes: false,
            atomic_create: true,
            ..Capabilities::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        super::super::conformance::run_all(&super::MemoryBackend::new());
    }
}
