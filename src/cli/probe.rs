//! `gatevault probe`: sends the requests of a probe file through a gateway and checks the answers
//! (see `docs/probes.md`). It needs no repository.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{exit, print_json, Global};

#[derive(Args, Debug)]
pub(crate) struct ProbeArgs {
    /// Probe file (TOML; see docs/probes.md).
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
    /// Where the requests go: the gateway's proxy listener (http://HOST:PORT).
    #[arg(long, value_name = "URL")]
    base_url: String,
}

pub(crate) fn run(g: &Global, a: ProbeArgs) -> anyhow::Result<u8> {
    let file = crate::probe::load(&a.file)?;
    crate::probe::check_base_url(&a.base_url).context("--base-url")?;
    let r = crate::probe::run(&file, &a.base_url);
    if g.json {
        print_json(&r)?;
    } else {
        for p in &r.results {
            if p.passed && g.quiet {
                continue;
            }
            println!(
                "{}  {}: {} ({} ms)",
                if p.passed { "pass" } else { "FAIL" },
                p.name,
                p.detail,
                p.ms
            );
        }
        // The verdict is printed even with --quiet, as `check` does.
        println!(
            "{} of {} probes passed against {}",
            r.results.len() - r.failures(),
            r.results.len(),
            r.base_url
        );
    }
    Ok(if r.passed() { exit::OK } else { exit::FAILURE })
}
