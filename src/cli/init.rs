//! `gatevault init`.

use std::io::Write;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::{exit, print_json, Global};
use crate::crypto::keyslot::KdfParams;
use crate::crypto::Cipher;
use crate::format::ChunkerParams;
use crate::repo::{Credentials, InitOptions, Repository};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Preset {
    /// 2 KiB min / 8 KiB avg / 64 KiB max: gateway configurations.
    Config,
    /// 512 KiB / 2 MiB / 8 MiB: large files.
    Bulk,
}

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// Cipher for new data.
    #[arg(long, value_enum, default_value = "xchacha20-poly1305")]
    cipher: Cipher,
    /// Chunker preset.
    #[arg(long, value_enum, default_value = "config")]
    chunker: Preset,
    /// zstd level for new blobs, 0 turns compression off (default: 3 for the config preset, where data
    /// is small; 1 for bulk, where level 3 costs a third of the throughput for under 1% of size).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=22))]
    compression: Option<i32>,
    /// Argon2id memory in MiB for the password slot (minimum 8; default 64).
    #[arg(long, default_value_t = 64)]
    kdf_memory_mib: u32,
    /// Argon2id passes for the password slot (default 3).
    #[arg(long, default_value_t = 3)]
    kdf_iterations: u32,
    /// Target size of new packs (64K to 128M; default 16M). Smaller packs make prune repack less.
    #[arg(long, value_name = "SIZE", value_parser = parse_pack_size)]
    pack_size: Option<u32>,
}

fn parse_pack_size(s: &str) -> Result<u32, String> {
    match crate::prune::parse_size(s) {
        Some(n) if (64 << 10..=128 << 20).contains(&n) => Ok(n as u32),
        _ => Err(format!("{s:?}: give a size from 64K to 128M")),
    }
}

/// Creates a key file of 32 random bytes (mode 0600), never overwriting: when another process
/// creates the same file first, that one stays (and is the one read).
pub(crate) fn create_key_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let key: [u8; 32] = rand::random();
    // Written under a temporary name, then linked to its own (create-only): a process killed midway
    // leaves no empty or partial key file that a rerun would find and refuse.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.tmp-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating key file {}", path.display()))?;
        f.write_all(hex::encode(key).as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            // Another process created it meanwhile: it is used, as one that existed already.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            r => r.with_context(|| format!("creating key file {}", path.display()))?,
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

pub(crate) fn run(g: &Global, a: InitArgs) -> anyhow::Result<u8> {
    // First: a region policy refuses the location before even a key file is made.
    let backend = g.backend()?;
    let mut created_key_file = false;
    if let Some(k) = &g.key_file {
        if !k.exists() {
            create_key_file(k)?;
            created_key_file = true;
        }
    }
    let key_file = g.read_key_file()?;
    let password = if key_file.is_some()
        && g.password_file.is_none()
        && g.password_command.is_none()
        && std::env::var("GATEVAULT_PASSWORD").is_err()
    {
        None
    } else {
        g.password(true)?
    };
    let opts = InitOptions {
        cipher: a.cipher,
        chunker: match a.chunker {
            Preset::Config => ChunkerParams::config(),
            Preset::Bulk => ChunkerParams::bulk(),
        },
        compression: a.compression.unwrap_or(match a.chunker {
            Preset::Config => 3,
            Preset::Bulk => 1,
        }),
        kdf: Some(KdfParams::new(
            a.kdf_memory_mib.saturating_mul(1024),
            a.kdf_iterations,
        )),
        pack_size: a.pack_size.unwrap_or(crate::repo::DEFAULT_PACK_SIZE),
    };
    let creds = Credentials { password, key_file };
    let repo = Repository::init(backend, &opts, &creds, g.cache_dir())?;
    super::audit::attach(g, &repo);
    if g.json {
        print_json(
            &serde_json::json!({"message_type": "initialized", "id": repo.config().id, "repository": repo.backend().location()}),
        )?;
    } else if !g.quiet {
        println!(
            "created gatevault repository {} at {}",
            repo.config().id.short(),
            repo.backend().location()
        );
        if created_key_file {
            if let Some(k) = &g.key_file {
                println!("created key file {}: keep it apart from the repository; without it (or a password slot) the data cannot be read", k.display());
            }
        }
        println!("keep your password or key file safe: losing it makes the data in the repository impossible to read");
    }
    Ok(exit::OK)
}
