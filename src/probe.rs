//! Post-recovery probes: real HTTP requests through a gateway, checked against expectations
//! (see `docs/probes.md`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A probe file (`probes.toml`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProbeFile {
    /// The probes, run in order.
    #[serde(default, rename = "probe")]
    pub probes: Vec<serde_json::Value>,
}

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The probe's name.
    pub name: String,
    /// Whether every expectation held.
    pub passed: bool,
    /// Requests sent.
    pub requests: u32,
    /// What was seen, or what did not hold.
    pub detail: String,
    /// Milliseconds taken.
    pub ms: u64,
}

/// The results of a probe file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The base URL probed.
    pub base_url: String,
    /// One result per probe.
    pub results: Vec<ProbeResult>,
}

impl ProbeReport {
    /// Probes that failed.
    pub fn failures(&self) -> usize {
        self.results.iter().filter(|r| !r.passed).count()
    }

    /// Whether every probe passed.
    pub fn passed(&self) -> bool {
        self.failures() == 0
    }
}

/// Reads a probe file.
///
/// # Errors
/// [`Error::Io`] when it cannot be read; [`Error::InvalidInput`] when it is not a valid probe file.
pub fn load(path: &Path) -> Result<ProbeFile> {
    Err(Error::InvalidInput(format!(
        "{}: probes are not available yet",
        path.display()
    )))
}

/// Runs every probe of `file` against `base_url`.
pub fn run(_file: &ProbeFile, base_url: &str) -> ProbeReport {
    ProbeReport {
        base_url: base_url.into(),
        results: vec![],
    }
}
