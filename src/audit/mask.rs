//! Removing secret values from a command line before the audit log records it.
//!
//! The log is read by every key role, so it must never hold a password, token or key. Masked, as
//! `<secret>`:
//! - the value of every long option whose name contains a secret word (`--password-file F`,
//!   `--password-command=C`, `--admin-token T`, `--client-secret S`);
//! - in any other argument or value, the value of a `KEY=VALUE` or `KEY: VALUE` pair whose key contains a
//!   secret word (`--tag api_token=abc`, `Authorization: Bearer x`), including URL query parameters;
//! - the password of a URL (`https://user:pw@host`);
//! - the values of `erase --subject` and `--match`, which are personal data.
//!
//! Values masked there, and those of secret environment variables ([`env_secrets`]), are also scrubbed
//! from the error message an entry records ([`Masked::scrub`]).
//!
//! Whether an option takes a value comes from the command-line parser ([`OptionInfo`]), so that a flag
//! like `--show-secrets` does not hide the argument after it. Secret files (key files, password files)
//! are never read into the log: only their paths appear, and those of `--*password*` options are masked
//! too.

/// What replaces a secret value.
pub const MASK: &str = "<secret>";

/// Words that make an option name or a `KEY=VALUE` key secret (compared in lower case).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "token",
    "secret",
    "credential",
    "apikey",
    "api_key",
    "api-key",
    "authorization",
    "private",
];

/// Options whose values are personal data (`erase --subject kong:consumer=alice`, `--match
/// email=...`): masked like secrets, so that the log of an erasure never holds the erased values.
const PERSONAL_OPTIONS: &[&str] = &["subject", "match"];

/// Whether an option name or a key names a secret.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| n.contains(w))
}

/// What the parser knows about an option as written (`--name` or `-x`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionInfo {
    /// Its long name, without dashes (the short letter when it has none).
    pub long: String,
    /// Whether it takes a value.
    pub takes_value: bool,
}

/// A command line with its secret values masked, and the values that were masked (so that they can be
/// scrubbed from error messages too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Masked {
    /// The arguments, secrets replaced by [`MASK`].
    pub args: Vec<String>,
    /// The values replaced.
    pub secrets: Vec<String>,
}

impl Masked {
    /// `text` with every masked value replaced by [`MASK`] (values under 3 characters are left alone:
    /// they would mangle the text and reveal nothing).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        let mut secrets: Vec<&String> = self.secrets.iter().filter(|s| s.len() >= 3).collect();
        // Longest first, so that a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in secrets {
            out = out.replace(s.as_str(), MASK);
        }
        out
    }
}

/// Masks the secret values of `args` (the command line after the program name). `lookup` tells what
/// an option is; unknown options are treated as taking no value (a value after them is still
/// checked as an argument).
pub fn mask_args(args: &[String], lookup: &dyn Fn(&str) -> Option<OptionInfo>) -> Masked {
    let mut m = Masked::default();
    let mut it = args.iter();
    let mut options_done = false;
    while let Some(a) = it.next() {
        if options_done || !a.starts_with('-') || a == "-" {
            let v = mask_value(a, &mut m.secrets);
            m.args.push(v);
            continue;
        }
        if a == "--" {
            options_done = true;
            m.args.push(a.clone());
            continue;
        }
        // `--name=value`, `--name value`, `-xVALUE`, `-x value`.
        let (opt, inline) = match a.strip_prefix("--") {
            Some(rest) => match rest.split_once('=') {
                Some((n, v)) => (format!("--{n}"), Some(v.to_string())),
                None => (a.clone(), None),
            },
            None => {
                let mut chars = a.chars();
                chars.next();
                let x: String = chars.next().map(String::from).unwrap_or_default();
                let rest: String = chars.collect();
                (format!("-{x}"), (!rest.is_empty()).then_some(rest))
            }
        };
        let info = lookup(&opt);
        let secret = is_secret_name(opt.trim_start_matches('-'))
            || info.as_ref().is_some_and(|i| {
                is_secret_name(&i.long) || PERSONAL_OPTIONS.contains(&i.long.as_str())
            });
        let takes_value = info.as_ref().is_some_and(|i| i.takes_value);
        match inline {
            Some(v) if a.starts_with("--") || takes_value => {
                let sep = if a.starts_with("--") { "=" } else { "" };
                let v = if secret {
                    m.secrets.push(v);
                    MASK.to_string()
                } else {
                    mask_value(&v, &mut m.secrets)
                };
                m.args.push(format!("{opt}{sep}{v}"));
            }
            // A cluster of short flags (`-qv`).
            Some(_) => m.args.push(a.clone()),
            None => {
                m.args.push(a.clone());
                if takes_value {
                    if let Some(v) = it.next() {
                        if secret {
                            m.secrets.push(v.clone());
                            m.args.push(MASK.into());
                        } else {
                            let v = mask_value(v, &mut m.secrets);
                            m.args.push(v);
                        }
                    }
                } else if secret && lookup(&opt).is_none() {
                    // An option the parser does not know, named like a secret: its value may follow.
                    if let Some(v) = it.next() {
                        m.secrets.push(v.clone());
                        m.args.push(MASK.into());
                    }
                }
            }
        }
    }
    m
}

/// The secret values held by environment variables (`KONG_ADMIN_TOKEN`, `GATEVAULT_PASSWORD`, secret
/// headers in `DECK_HEADERS`), so that an error message quoting one can be scrubbed before it is
/// recorded. Environment variables themselves are never recorded.
pub fn env_secrets(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in vars {
        if value.is_empty() {
            continue;
        }
        if is_secret_name(&name) {
            out.push(value);
        } else if name.to_ascii_lowercase().contains("header") {
            for part in value.split(',') {
                mask_value(part.trim(), &mut out);
            }
        }
    }
    out
}

/// Masks secret parts of one argument or option value: `KEY=VALUE` / `KEY: VALUE` pairs with a secret
/// key, URL passwords, and secret query parameters.
fn mask_value(v: &str, secrets: &mut Vec<String>) -> String {
    if let Some(masked) = mask_url(v, secrets) {
        return masked;
    }
    for sep in ['=', ':'] {
        if let Some((k, val)) = v.split_once(sep) {
            if !val.is_empty() && !k.contains('/') && is_secret_name(k) {
                let val_trimmed = val.trim_start();
                let space = &val[..val.len() - val_trimmed.len()];
                secrets.push(val_trimmed.to_string());
                return format!("{k}{sep}{space}{MASK}");
            }
        }
    }
    v.to_string()
}

/// Masks the password and secret query parameters of a URL (`scheme://user:pw@host/path?token=x`);
/// `None` when `v` is no URL.
fn mask_url(v: &str, secrets: &mut Vec<String>) -> Option<String> {
    let (scheme, rest) = v.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, pw)) => {
                secrets.push(pw.to_string());
                format!("{user}:{MASK}@{host}")
            }
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, val)) if !val.is_empty() && is_secret_name(k) => {
                        secrets.push(val.to_string());
                        format!("{k}={MASK}")
                    }
                    _ => p.to_string(),
                })
                .collect();
            let mut t = format!("{path}?{}", params.join("&"));
            if let Some(f) = fragment {
                t.push('#');
                t.push_str(f);
            }
            t
        }
        None => tail.to_string(),
    };
    Some(format!("{scheme}://{authority}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(opt: &str) -> Option<OptionInfo> {
        let (long, takes_value) = match opt {
            "--password-file" | "--password-command" | "--new-password-file" | "--admin-token" => {
                (opt.trim_start_matches('-'), true)
            }
            "--show-secrets" | "--include-secret-values" | "--json" | "--quiet" => {
                (opt.trim_start_matches('-'), false)
            }
            "--tag" | "--endpoint" | "--repo" | "--key-file" | "--description" => {
                (opt.trim_start_matches('-'), true)
            }
            "-r" => ("repo", true),
            "-q" => ("quiet", false),
            "-v" => ("verbose", false),
            "-p" => ("password", true),
            _ => return None,
        };
        Some(OptionInfo {
            long: long.into(),
            takes_value,
        })
    }

    fn mask(args: &[&str]) -> Masked {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        mask_args(&a, &lookup)
    }

    #[test]
    fn secret_options_lose_their_values() {
        let m = mask(&[
            "-r",
            "/srv/repo",
            "--password-file",
            "/run/pw",
            "--password-command=pass show gw",
            "--key-file",
            "/etc/gv.key",
            "--admin-token",
            "tok-123",
            "-phunter2",
            "-p",
            "hunter3",
            "backup",
            "/etc/kong",
        ]);
        assert_eq!(
            m.args,
            [
                "-r",
                "/srv/repo",
                "--password-file",
                MASK,
                "--password-command=<secret>",
                "--key-file",
                "/etc/gv.key",
                "--admin-token",
                MASK,
                "-p<secret>",
                "-p",
                MASK,
                "backup",
                "/etc/kong"
            ]
        );
        assert_eq!(
            m.secrets,
            ["/run/pw", "pass show gw", "tok-123", "hunter2", "hunter3"]
        );
    }

    #[test]
    fn flags_named_like_secrets_do_not_hide_the_next_argument() {
        let m = mask(&["diff", "--show-secrets", "abc", "def", "-qv", "--json"]);
        assert_eq!(
            m.args,
            ["diff", "--show-secrets", "abc", "def", "-qv", "--json"]
        );
        assert!(m.secrets.is_empty());
        // An unknown option named like a secret is assumed to take one.
        let m = mask(&["--client-secret", "s3cr3t", "x"]);
        assert_eq!(m.args, ["--client-secret", MASK, "x"]);
    }

    #[test]
    fn pairs_and_urls_are_masked_inside_values() {
        let m = mask(&[
            "--tag",
            "api_token=abc123",
            "--tag",
            "Environment=prod",
            "--description",
            "Authorization: Bearer xyz",
            "--endpoint",
            "https://admin:pw0rd@kong.internal:8001/admin?apikey=k3y&page=2#top",
            "GATEWAY_SECRET=zzz",
            "--tag=password=p",
            "--",
            "--password=x",
            "/path/a=b",
        ]);
        assert_eq!(
            m.args,
            [
                "--tag",
                "api_token=<secret>",
                "--tag",
                "Environment=prod",
                "--description",
                "Authorization: <secret>",
                "--endpoint",
                "https://admin:<secret>@kong.internal:8001/admin?apikey=<secret>&page=2#top",
                "GATEWAY_SECRET=<secret>",
                "--tag=password=<secret>",
                "--",
                "--password=<secret>",
                "/path/a=b"
            ]
        );
        let msg = "password command \"pass show gw\" failed; token tok-123 refused";
        let m2 = mask(&[
            "--password-command",
            "pass show gw",
            "--admin-token",
            "tok-123",
        ]);
        assert_eq!(
            m2.scrub(msg),
            "password command \"<secret>\" failed; token <secret> refused"
        );
        assert!(m.secrets.contains(&"pw0rd".to_string()));
    }

    #[test]
    fn secrets_of_the_environment_are_scrubbed() {
        let vars = [
            ("KONG_ADMIN_TOKEN", "kong-tok-1"),
            ("DECK_HEADERS", "Kong-Admin-Token:deck-tok-2, X-Team:gw"),
            ("HOME", "/root"),
            ("GATEVAULT_PASSWORD", ""),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let m = Masked {
            args: vec![],
            secrets: env_secrets(vars),
        };
        assert_eq!(m.secrets, ["kong-tok-1", "deck-tok-2"]);
        assert_eq!(
            m.scrub("401 from /root with kong-tok-1 and deck-tok-2"),
            "401 from /root with <secret> and <secret>"
        );
    }

    #[test]
    fn plain_urls_and_paths_pass() {
        let m = mask(&["--endpoint", "http://localhost:8001", "ls", "abc:/etc/kong"]);
        assert_eq!(
            m.args,
            ["--endpoint", "http://localhost:8001", "ls", "abc:/etc/kong"]
        );
        assert!(m.secrets.is_empty());
    }
}
