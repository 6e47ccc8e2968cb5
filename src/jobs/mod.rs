//! Scheduled jobs: the `[jobs.NAME]` tables of the config file ([`config`]), the daemon that runs
//! them ([`daemon`], one child process per run, [`run`]), the records of their runs ([`record`],
//! kept by [`store`]) and the alerts raised when one fails, runs too long or misses its RPO
//! ([`alert`]). See `docs/automation.md`.

pub mod alert;
pub mod config;
pub mod daemon;
pub mod record;
pub mod run;
pub mod store;
