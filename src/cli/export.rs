//! `gatevault export`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{exit, print_json, FilterArgs, Global};
use crate::gateway::stored::{export, ExportFormat};

#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    /// Snapshot id (prefix) or `latest`.
    snapshot: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: ExportFormat,
    /// Folder to write into (default: the current one); `-` writes to standard output.
    #[arg(long, short = 'o', default_value = ".")]
    output: PathBuf,
    #[command(flatten)]
    filter: FilterArgs,
}

pub(crate) fn run(g: &Global, a: ExportArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let (id, snap) = crate::select::resolve(&repo, Some(&a.snapshot), &a.filter.filter(), None)?;
    let (name, bytes) = export(&repo, &snap, a.format)?;
    if a.output.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().write_all(&bytes)?;
        return Ok(exit::OK);
    }
    let path = a.output.join(&name);
    // Write-then-rename, never over an existing file.
    let tmp = a.output.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    if path.exists() {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!(crate::Error::InvalidInput(format!(
            "{} exists; remove it or choose another --output folder",
            path.display()
        )));
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    if g.json {
        print_json(&serde_json::json!({"snapshot": id, "file": path, "bytes": bytes.len()}))?;
    } else if !g.quiet {
        println!(
            "wrote {} ({} bytes) from snapshot {}",
            path.display(),
            bytes.len(),
            id.short()
        );
    }
    Ok(exit::OK)
}
