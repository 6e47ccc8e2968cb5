//! `gatevault unlock`.

use clap::Args;

use super::{exit, Global};

#[derive(Args, Debug)]
pub(crate) struct UnlockArgs {
    /// Remove every lock, not only stale ones (make sure no other gatevault runs).
    #[arg(long)]
    remove_all: bool,
}

pub(crate) fn run(g: &Global, a: UnlockArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let n = crate::repo::lock::remove_locks(repo.backend(), repo.keys(), a.remove_all)?;
    if !g.quiet {
        println!(
            "removed {n} {}lock(s)",
            if a.remove_all { "" } else { "stale " }
        );
    }
    Ok(exit::OK)
}
