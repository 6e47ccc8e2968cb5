//! Prometheus metrics of the daemon and of one-shot runs. (Interface only; being filled in.)

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::jobs::record::JobRecord;
use crate::profile::Config;

/// What the daemon exposes on `/metrics`: cheap to clone, shared between the scheduler and the
/// HTTP server.
#[derive(Clone, Default)]
pub struct Metrics {
    #[allow(dead_code)]
    jobs: Arc<Mutex<Vec<JobRecord>>>,
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in a job record, at the start of a run and again at its end.
    pub fn observe_job(&self, _record: &JobRecord) {}

    /// Opens every repository of `config` and refreshes its figures (size, snapshot counts, last
    /// check and drill, 3-2-1 state). Blocking; an unreachable repository is reported as such.
    pub fn refresh_repositories(&self, _config: &Config) {}

    /// The Prometheus text exposition of everything known.
    pub fn render(&self) -> String {
        String::new()
    }
}

/// The `/metrics` HTTP server; stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
}

impl MetricsServer {
    /// The address it listens on (the port chosen when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Serves `metrics` on `addr` (`GET /metrics`) on a thread of its own.
///
/// # Errors
/// The address cannot be bound.
pub fn serve(addr: SocketAddr, _metrics: Metrics) -> Result<MetricsServer> {
    Ok(MetricsServer { addr })
}
