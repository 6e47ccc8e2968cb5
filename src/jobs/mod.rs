//! Scheduled jobs: the `[jobs.NAME]` tables of the config file, the daemon that runs them, and the
//! records of their runs. See `docs/automation.md`.

pub mod record;
