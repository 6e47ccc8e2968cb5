//! The config file on the command line: `-r config:NAME`, the options a configured repository is
//! opened with (its location, backend options and credentials), and the region policy checked
//! before anything is written.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Global;
use crate::audit::session::Session;
use crate::backend::Backend;
use crate::error::Error;
use crate::profile::{
    default_config_path, enforce_region, Config, RegionPattern, RepositoryConfig,
    CONFIG_LOCATION_PREFIX,
};

/// What the command line knows of the configured repository it opens.
#[derive(Clone, Debug, Default)]
pub(crate) struct Configured {
    /// Its name in the config file.
    pub(crate) name: Option<String>,
    /// The region it declares.
    pub(crate) declared_region: Option<String>,
    /// The region policies that apply to it (its own and its profiles').
    pub(crate) policies: Vec<RegionPattern>,
}

impl Global {
    /// Reads the config file: `--config`, else `GATEVAULT_CONFIG`, else the default path.
    pub(crate) fn load_config(&self) -> anyhow::Result<Config> {
        let path = self.config.clone().or_else(default_config_path).ok_or_else(|| {
            Error::InvalidInput(
                "no config file: give one with --config or GATEVAULT_CONFIG (neither XDG_CONFIG_HOME nor HOME is set)".into(),
            )
        })?;
        Ok(Config::load(&path)?)
    }

    /// Replaces `-r config:NAME` by the repository the config file names (location, options,
    /// credentials, region and region policies); any other location is left alone.
    pub(crate) fn resolve_configured(&mut self) -> anyhow::Result<()> {
        let Some(name) = self
            .repo
            .as_deref()
            .and_then(|r| r.strip_prefix(CONFIG_LOCATION_PREFIX))
            .map(str::to_string)
        else {
            return Ok(());
        };
        let config = self.load_config()?;
        let rc = config.repository(&name)?.clone();
        let policies = config.policies_for(&name, None);
        *self = self.for_repository(&rc, policies, true, self.audit.clone());
        Ok(())
    }

    /// These options, set to open configured repository `rc`: its location, its backend options
    /// (and those of the command line when `cli_options`, which win), its credentials when it has
    /// any (they replace the command line's), and `policies`. `audit` is the session whose log
    /// records what is written through it.
    pub(crate) fn for_repository(
        &self,
        rc: &RepositoryConfig,
        policies: Vec<RegionPattern>,
        cli_options: bool,
        audit: Arc<Session>,
    ) -> Global {
        let mut g = self.clone();
        g.repo = Some(rc.location.clone());
        let mut opts: BTreeMap<String, String> = rc.options.clone();
        if cli_options {
            for o in &self.options {
                if let Some((k, v)) = o.split_once('=') {
                    opts.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        g.options = opts.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        if rc.has_credentials() {
            g.password_file = rc.password_file.clone();
            g.password_command = rc.password_command.clone();
            g.key_file = rc.key_file.clone();
        }
        g.configured = Configured {
            name: Some(rc.name.clone()),
            declared_region: rc.region.clone(),
            policies,
        };
        g.audit = audit;
        g
    }

    /// The region policies that apply to the repository these options open.
    fn region_policies(&self) -> anyhow::Result<Vec<RegionPattern>> {
        let mut policies = self.configured.policies.clone();
        if let Some(p) = &self.require_region {
            policies.push(RegionPattern::new(p, "--require-region")?);
        }
        Ok(policies)
    }

    /// Refuses the repository of `backend` when a region policy applies and its region (the
    /// store's answer, else the declared one) does not match; asks the store nothing without a
    /// policy.
    pub(crate) fn enforce_region(&self, backend: &dyn Backend) -> anyhow::Result<()> {
        let policies = self.region_policies()?;
        if policies.is_empty() {
            return Ok(());
        }
        let location = backend.location();
        let name = self
            .configured
            .name
            .clone()
            .unwrap_or_else(|| location.clone());
        let store = backend.region().map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "finding the region of repository {name} for the region policy (nothing was written)"
            ))
        })?;
        enforce_region(
            &name,
            &location,
            store.as_deref(),
            self.configured.declared_region.as_deref(),
            &policies,
        )?;
        Ok(())
    }

    /// Opens the backend of these options without wrapping it for the audit log, and applies the
    /// region policy: the check made for every destination before a profile's backup starts.
    pub(crate) fn preflight(&self) -> anyhow::Result<()> {
        let loc = self.location()?;
        let opts = crate::backend::BackendOptions::parse(&self.options)?;
        let backend = crate::backend::open(&loc, &opts)?;
        self.enforce_region(backend.as_ref())
    }
}

/// How one copy of a profile's backup went.
#[derive(serde::Serialize)]
struct CopyOutcome {
    repository: String,
    location: String,
    /// `copied`, `already-present` or `failed`.
    status: &'static str,
    snapshot_id: Option<String>,
    blobs_copied: u64,
    bytes_added: u64,
    error: Option<String>,
}

/// `backup --profile NAME`: checks the region of every destination, backs up to the primary, then
/// copies the new snapshot to each other repository. A failed copy leaves the primary's snapshot in
/// place; the command then ends partial (3) and names the `gatevault copy` to run.
pub(crate) fn backup_profile(
    g: &Global,
    name: &str,
    a: super::backup::BackupArgs,
) -> anyhow::Result<u8> {
    use crate::audit::session::{Invocation, Outcome};

    let config = g.load_config()?;
    let profile = config.profile(name)?.clone();
    let global_for = |repo: &str, audit: Arc<Session>| -> anyhow::Result<Global> {
        let rc = config.repository(repo)?;
        Ok(g.for_repository(rc, config.policies_for(repo, Some(&profile)), false, audit))
    };
    // The region policy of every destination, before the first byte leaves: a refusal stops the
    // whole backup; a destination that cannot be reached now fails its copy later instead.
    let primary_g = global_for(&profile.primary, g.audit.clone())?;
    primary_g.preflight()?;
    let mut copies = Vec::new();
    for c in &profile.copies {
        let cg = global_for(c, Arc::new(Session::default()))?;
        let reachable = match cg.preflight() {
            Ok(()) => Ok(()),
            Err(e)
                if e.chain().any(|x| {
                    matches!(x.downcast_ref::<Error>(), Some(Error::RegionRefused { .. }))
                }) =>
            {
                return Err(e.context(format!(
                    "profile {name}: no backup was made, because copy destination {c} is refused"
                )))
            }
            Err(e) => Err(format!("{e:#}")),
        };
        copies.push((c.clone(), cg, reachable));
    }
    if !g.quiet && !g.json {
        println!(
            "profile {name}: backing up to {} ({}), then copying to {}",
            profile.primary,
            primary_g.repo.as_deref().unwrap_or_default(),
            if profile.copies.is_empty() {
                "nothing else".to_string()
            } else {
                profile.copies.join(", ")
            }
        );
    }
    let (code, src, id, mut summary) = super::backup::run_one(&primary_g, a, false)?;
    let mut outcomes = Vec::new();
    for (c, cg, reachable) in copies {
        let location = cg.repo.clone().unwrap_or_default();
        let result = reachable.map_err(anyhow::Error::msg).and_then(|()| {
            let dst = cg.open()?;
            let opts = crate::copy::CopyOptions {
                ids: vec![id.to_hex()],
                ..Default::default()
            };
            Ok(crate::copy::copy(&src, &dst, &opts)?)
        });
        // Each destination records its copy in its own audit log.
        let inv = Invocation {
            command: "copy".into(),
            masked: crate::audit::mask::Masked {
                args: vec![
                    "backup".into(),
                    "--profile".into(),
                    name.to_string(),
                    format!("(copy from {} to {c})", profile.primary),
                ],
                secrets: vec![],
            },
            always: true,
        };
        let outcome = match &result {
            Ok(_) => Outcome::Exit(super::exit::OK),
            Err(e) => Outcome::Failed {
                message: format!("{e:#}"),
                exit: super::exit::FAILURE,
            },
        };
        let audit_error = cg.audit.record(&inv, &outcome).err();
        let o = match result {
            Ok(r) => {
                let (status, target) = match (r.copied.first(), r.already_present.first()) {
                    (Some(t), _) => ("copied", Some(t.target)),
                    (None, Some(t)) => ("already-present", Some(t.target)),
                    (None, None) => ("copied", None),
                };
                CopyOutcome {
                    repository: c.clone(),
                    location,
                    status,
                    snapshot_id: target.map(|t| t.to_hex()),
                    blobs_copied: r.blobs_copied,
                    bytes_added: r.bytes_added,
                    error: audit_error.map(|e| {
                        format!("the copy is stored, but its audit entry could not be written: {e}")
                    }),
                }
            }
            Err(e) => CopyOutcome {
                repository: c.clone(),
                location,
                status: "failed",
                snapshot_id: None,
                blobs_copied: 0,
                bytes_added: 0,
                error: Some(format!("{e:#}")),
            },
        };
        if !g.quiet && !g.json {
            match (o.status, &o.snapshot_id) {
                ("failed", _) => {}
                (s, Some(t)) => println!(
                    "{s} to {c}: snapshot {} ({} blobs, {} added)",
                    &t[..8],
                    o.blobs_copied,
                    crate::util::bytes(o.bytes_added)
                ),
                (s, None) => println!("{s} to {c}"),
            }
        }
        outcomes.push(o);
    }
    let failed: Vec<&CopyOutcome> = outcomes.iter().filter(|o| o.status == "failed").collect();
    for f in &failed {
        eprintln!(
            "error: copy of snapshot {} to {} failed: {}",
            id.short(),
            f.repository,
            f.error.as_deref().unwrap_or_default()
        );
    }
    if !failed.is_empty() {
        eprintln!(
            "warning: snapshot {} is saved in {}, but {} of {} copies failed; when the store is back, run: {}",
            id.short(),
            profile.primary,
            failed.len(),
            outcomes.len(),
            failed
                .iter()
                .map(|f| format!(
                    "gatevault copy --from-repo config:{} --to-repo config:{} {}",
                    profile.primary,
                    f.repository,
                    id.short()
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if g.json {
        summary["profile"] = serde_json::json!(name);
        summary["primary"] = serde_json::json!({
            "repository": profile.primary,
            "location": primary_g.repo,
            "snapshot_id": id,
        });
        summary["copies"] = serde_json::to_value(&outcomes)?;
        super::print_json(&summary)?;
    }
    Ok(if failed.is_empty() {
        code
    } else {
        super::exit::PARTIAL
    })
}

impl Global {
    /// A copy of these options with `-r config:NAME` resolved: for commands that open a second
    /// repository given by another option (`copy --from-repo config:NAME`).
    pub(crate) fn resolved(&self) -> anyhow::Result<Global> {
        let mut g = self.clone();
        g.resolve_configured()?;
        Ok(g)
    }
}
