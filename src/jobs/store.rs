//! The job records on disk: one JSON file per run under `<state_dir>/jobs/`, written whole to a
//! temporary file and renamed into place, so that a reader (or a daemon killed mid-write) never
//! sees half a record. A run's file is written when it starts and replaced when it ends.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::jobs::record::JobRecord;

/// The folder of job records of one state folder.
#[derive(Clone, Debug)]
pub struct RecordStore {
    dir: PathBuf,
}

impl RecordStore {
    /// The records under `<state_dir>/jobs/` (created on the first write).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("jobs"),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes (or replaces) `rec` atomically.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the folder when it cannot be created or written.
    pub fn write(&self, rec: &JobRecord) -> Result<()> {
        let io = |what: &str, e: std::io::Error| {
            Error::InvalidInput(format!(
                "cannot {what} job record in {}: {e} (check that the daemon's state_dir is writable)",
                self.dir.display()
            ))
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| io("create the folder of the", e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .map_err(|e| io("write a", e))?;
        let bytes = serde_json::to_vec_pretty(rec)
            .map_err(|e| Error::InvalidInput(format!("job record {}: {e}", rec.id)))?;
        std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| io("write a", e))?;
        tmp.as_file().sync_all().map_err(|e| io("sync a", e))?;
        tmp.persist(self.dir.join(format!("{}.json", rec.id)))
            .map_err(|e| io("rename a", e.error))?;
        Ok(())
    }

    /// Every readable record, newest start first; files that are not records are skipped (with a
    /// warning in the log).
    ///
    /// # Errors
    /// The folder exists but cannot be listed.
    pub fn list(&self) -> Result<Vec<JobRecord>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::InvalidInput(format!(
                    "cannot list job records in {}: {e}",
                    self.dir.display()
                )))
            }
        };
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let p = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<JobRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!("skipping job record {}: {e}", p.display()),
            }
        }
        out.sort_by(|a, b| b.started.cmp(&a.started).then_with(|| b.id.cmp(&a.id)));
        Ok(out)
    }
}

/// A new run id: the start time (sortable) and a random suffix.
pub fn new_run_id(job: &str, started: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{}-{job}-{:08x}",
        started.format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::record::JobStatus;

    fn rec(job: &str, secs: i64) -> JobRecord {
        let started = chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
        JobRecord {
            id: new_run_id(job, started),
            job: job.into(),
            kind: "backup".into(),
            repository: "local".into(),
            status: JobStatus::Started,
            started,
            finished: None,
            duration_ms: None,
            bytes_added: None,
            dedup_ratio: None,
            snapshot: None,
            exit_code: None,
            error: None,
        }
    }

    #[test]
    fn records_are_replaced_in_place_and_listed_newest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let s = RecordStore::new(tmp.path());
        assert!(s.list().unwrap().is_empty(), "no folder yet");
        let mut a = rec("a", 0);
        s.write(&a).unwrap();
        s.write(&rec("b", 5)).unwrap();
        a.status = JobStatus::Success;
        a.duration_ms = Some(12);
        s.write(&a).unwrap();
        std::fs::write(s.dir().join("junk.json"), b"{").unwrap();
        let l = s.list().unwrap();
        assert_eq!(l.len(), 2, "one file per run; junk skipped");
        assert_eq!(l[0].job, "b");
        assert_eq!(l[1].status, JobStatus::Success);
        assert_eq!(l[1].duration_ms, Some(12));
    }
}
