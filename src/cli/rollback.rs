//! `gatevault rollback`.

use clap::Args;

use super::restore::{finish, ToGatewayArgs};
use super::Global;

#[derive(Args, Debug)]
pub(crate) struct RollbackArgs {
    #[command(flatten)]
    gateway: ToGatewayArgs,
}

pub(crate) fn run(g: &Global, a: RollbackArgs) -> anyhow::Result<u8> {
    let Some(kind) = a.gateway.target.to_gateway.clone() else {
        anyhow::bail!(crate::Error::InvalidInput(
            "name the gateway to roll back with --to-gateway KIND (and --endpoint)".into()
        ));
    };
    let target = crate::recovery::target(&a.gateway.target.gateway_options(&kind))?;
    let repo = g.open()?;
    let live = target.capture()?;
    let (id, snap) = crate::recovery::find_rollback_point(&repo, &live)?;
    if !g.quiet && !g.json {
        println!(
            "rolling {} back to snapshot {} (taken {} before a restore)",
            live.source.describe(),
            id.short(),
            snap.time
        );
    }
    let mut opts = a.gateway.restore_options(g);
    opts.rollback_tag = Some(crate::recovery::PRE_ROLLBACK.into());
    let r = crate::recovery::restore(&repo, &id, &snap, target.as_ref(), &opts)?;
    finish(g, &r, &a.gateway.after.report_dir, "rollback")
}
