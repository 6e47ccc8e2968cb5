//! nginx and HAProxy: file-based gateways. The capture is the main config file and every file it
//! includes or references (includes, certificates, private keys, user files, map files, scripts,
//! error pages), each stored verbatim at `<kind>/files/<absolute path without the leading slash>`.
//!
//! Relative paths resolve as the gateway resolves them: nginx against the main file's directory
//! (its configuration prefix); HAProxy against `crt-base` / `ca-base` for certificates and else
//! against the main file's directory (where the checker is run, so that both agree).
//!
//! Unless told not to, the capture first runs the gateway's own checker (`nginx -t`, `haproxy -c`)
//! when it is installed, so that a broken configuration is not backed up unnoticed.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use super::{Capture, Entity, GatewayOptions, Source};
use crate::error::{Error, Result};

/// Main config file of nginx when `--file` is not given.
pub const NGINX_DEFAULT: &str = "/etc/nginx/nginx.conf";
/// Main config file of HAProxy when `--file` is not given.
pub const HAPROXY_DEFAULT: &str = "/etc/haproxy/haproxy.cfg";

/// Captures the nginx or HAProxy configuration rooted at `opts.file` (`opts.kind` says which).
///
/// # Errors
/// [`Error::Gateway`] when the main file or a file it references cannot be read (naming the
/// directive), or when the gateway's checker rejects the configuration.
pub fn capture(opts: &GatewayOptions) -> Result<Capture> {
    let kind = opts.kind.as_str();
    let main = opts.file.clone().unwrap_or_else(|| {
        PathBuf::from(if kind == "haproxy" {
            HAPROXY_DEFAULT
        } else {
            NGINX_DEFAULT
        })
    });
    let main = absolute(&main);
    let mut source = Source::new(kind, &format!("file:{}", main.display()));
    let base = main.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut files = Files {
        describe: source.describe(),
        found: BTreeMap::new(),
    };
    let text = std::fs::read(&main).map_err(|e| {
        Error::gateway(
            source.describe(),
            format!(
                "cannot read the main config file {} ({e}): give its path with --file",
                main.display()
            ),
        )
    })?;
    files.found.insert(main.clone(), File::new("config", text));
    if kind == "haproxy" {
        haproxy_refs(&mut files, &main, &base)?;
    } else {
        nginx_refs(&mut files, &main, &base)?;
    }

    let bin = if kind == "haproxy" {
        "haproxy"
    } else {
        "nginx"
    };
    if let Some(bin) = find_binary(bin) {
        source.version = version(kind, &bin);
        if !opts.no_validate {
            validate(&source, kind, &bin, &main)?;
        }
    } else if !opts.no_validate {
        tracing::warn!("{bin} is not installed here: the configuration was not checked");
    }

    let entities = files
        .found
        .into_iter()
        .map(|(path, f)| f.entity(kind, &path))
        .collect();
    Ok(Capture {
        source,
        raw: BTreeMap::new(),
        entities,
    })
}

/// One captured file.
struct File {
    role: &'static str,
    bytes: Vec<u8>,
    /// Lines (0-based) holding secrets, and whether the whole file is secret.
    secret_lines: Vec<usize>,
    personal_lines: Vec<usize>,
    secret: bool,
}

impl File {
    fn new(role: &'static str, bytes: Vec<u8>) -> Self {
        Self {
            role,
            bytes,
            secret_lines: vec![],
            personal_lines: vec![],
            secret: false,
        }
    }

    fn entity(mut self, kind: &str, path: &Path) -> Entity {
        let key = path.display().to_string();
        let doc = format!("{kind}/files/{}", key.trim_start_matches('/'));
        if has_private_key(&self.bytes) {
            self.secret = true;
        }
        if self.role == "htpasswd" {
            for (i, line) in self.bytes.split(|&b| b == b'\n').enumerate() {
                let l = String::from_utf8_lossy(line);
                let l = l.trim();
                if !l.is_empty() && !l.starts_with('#') && l.contains(':') {
                    self.secret_lines.push(i);
                    self.personal_lines.push(i);
                }
            }
        }
        let mut e = Entity::verbatim(&doc, self.role, &key, self.bytes);
        if self.secret {
            e.secrets.push(String::new());
        } else {
            self.secret_lines.dedup();
            e.secrets
                .extend(self.secret_lines.iter().map(|i| format!("/{i}")));
        }
        self.personal_lines.dedup();
        e.personal
            .extend(self.personal_lines.iter().map(|i| format!("/{i}")));
        e
    }
}

/// The entity of the file at `path` (`role` as a reference gives it) with these lines marked, as
/// the capture makes it.
pub(crate) fn file_entity(
    kind: &str,
    path: &Path,
    role: &'static str,
    bytes: Vec<u8>,
    marks: &[LineMark],
) -> Entity {
    let mut files = Files {
        describe: String::new(),
        found: BTreeMap::from([(path.to_path_buf(), File::new(role, bytes))]),
    };
    files.mark(path, marks);
    let f = files.found.remove(path).expect("the file was added above");
    f.entity(kind, path)
}

fn has_private_key(b: &[u8]) -> bool {
    let t = String::from_utf8_lossy(b);
    t.contains("-----BEGIN") && t.contains("PRIVATE KEY-----")
}

/// The files found so far, by absolute path.
struct Files {
    describe: String,
    found: BTreeMap<PathBuf, File>,
}

/// Where a reference was made, for messages.
struct Origin<'a> {
    file: &'a Path,
    line: usize,
    directive: &'a str,
}

impl Files {
    /// Reads the file at `path` unless already found. Returns whether it was new.
    fn add(&mut self, path: &Path, role: &'static str, from: &Origin) -> Result<bool> {
        if self.found.contains_key(path) {
            return Ok(false);
        }
        let bytes = std::fs::read(path).map_err(|e| {
            Error::gateway(
                self.describe.clone(),
                format!(
                    "{} (referenced by `{}` at {}:{}) cannot be read ({e}): restore the file, or fix the directive",
                    path.display(),
                    from.directive,
                    from.file.display(),
                    from.line
                ),
            )
        })?;
        self.found
            .insert(path.to_path_buf(), File::new(role, bytes));
        Ok(true)
    }

    /// Marks line `line` (1-based) of `file` secret and/or personal.
    fn mark_line(&mut self, file: &Path, line: usize, secret: bool, personal: bool) {
        if let Some(f) = self.found.get_mut(file) {
            if secret {
                f.secret_lines.push(line - 1);
            }
            if personal {
                f.personal_lines.push(line - 1);
            }
        }
    }

    fn text(&self, file: &Path) -> String {
        self.found
            .get(file)
            .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
            .unwrap_or_default()
    }
}

/// `p` made absolute against the working directory, with `.` and `..` removed lexically.
fn absolute(p: &Path) -> PathBuf {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    normalize(&p)
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

fn resolve(base: &Path, arg: &str) -> PathBuf {
    normalize(&base.join(arg))
}

// ---------------------------------------------------------------------------------------------
// nginx

/// One nginx directive: name, arguments, line, and the blocks it sits in.
#[derive(Debug, PartialEq)]
pub(crate) struct Directive {
    pub(crate) name: String,
    pub(crate) args: Vec<String>,
    pub(crate) line: usize,
    pub(crate) blocks: Vec<String>,
}

/// Splits nginx config text into directives (block openers included, with their arguments).
pub(crate) fn nginx_directives(text: &str) -> Vec<Directive> {
    let mut out = vec![];
    let mut words: Vec<String> = vec![];
    let mut start_line = 1;
    let mut blocks: Vec<String> = vec![];
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut flush = |words: &mut Vec<String>, blocks: &[String], start: usize| {
        if !words.is_empty() {
            let name = words.remove(0);
            out.push(Directive {
                name,
                args: std::mem::take(words),
                line: start,
                blocks: blocks.to_vec(),
            });
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            ';' => flush(&mut words, &blocks, start_line),
            '{' => {
                let name = words.first().cloned().unwrap_or_default();
                flush(&mut words, &blocks, start_line);
                blocks.push(name);
            }
            '}' => {
                flush(&mut words, &blocks, start_line);
                blocks.pop();
            }
            '"' | '\'' => {
                if words.is_empty() {
                    start_line = line;
                }
                let mut w = String::new();
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                if e != c && e != '\\' {
                                    w.push('\\');
                                }
                                if e == '\n' {
                                    line += 1;
                                }
                                w.push(e);
                            }
                        }
                        d if d == c => break,
                        d => {
                            if d == '\n' {
                                line += 1;
                            }
                            w.push(d);
                        }
                    }
                }
                words.push(w);
            }
            c => {
                if words.is_empty() {
                    start_line = line;
                }
                let mut w = String::from(c);
                while let Some(&d) = chars.peek() {
                    let var_brace = d == '{' && w.ends_with('$');
                    if d.is_whitespace() || d == ';' || (d == '{' && !var_brace) {
                        break;
                    }
                    // `}` closes a `${var}` inside the word, else the block.
                    let open_var = w.rfind("${").is_some_and(|i| !w[i..].contains('}'));
                    if d == '}' && !open_var {
                        break;
                    }
                    w.push(d);
                    chars.next();
                }
                words.push(w);
            }
        }
    }
    out
}

/// Role of a file named by an nginx directive, and whether the directive names a file at all.
fn nginx_role(name: &str) -> Option<&'static str> {
    let n = name;
    // A quoted word nginx would refuse as a name (`"x\nssl_certificate"`) is no directive.
    if !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    if n == "auth_basic_user_file" {
        Some("htpasswd")
    } else if n.ends_with("ssl_certificate_key")
        || n.ends_with("ssl_password_file")
        || n == "ssl_session_ticket_key"
    {
        Some("key")
    } else if n.ends_with("ssl_certificate")
        || n.ends_with("ssl_trusted_certificate")
        || n.ends_with("ssl_client_certificate")
        || n == "ssl_stapling_file"
    {
        Some("certificate")
    } else if n.ends_with("ssl_crl") {
        Some("crl")
    } else if n == "ssl_dhparam" {
        Some("dhparam")
    } else {
        None
    }
}

/// A file that a configuration file names.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reference {
    /// The directive (or keyword) that names it, for messages.
    pub(crate) directive: String,
    /// Its line (1-based) in the naming file.
    pub(crate) line: usize,
    /// The path, resolved against the base folder and normalized; a glob pattern when `pattern`.
    pub(crate) path: PathBuf,
    /// What the file is (`include`, `map`, `key`, `certificate`, ...).
    pub(crate) role: &'static str,
    /// An nginx `include`: the files it names are read as configuration in turn.
    pub(crate) include: bool,
    /// The path is a glob pattern (an nginx `include` with `*`, `?` or `[`).
    pub(crate) pattern: bool,
}

/// A line (1-based) of a configuration file that holds a secret and/or personal data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LineMark {
    pub(crate) line: usize,
    pub(crate) secret: bool,
    pub(crate) personal: bool,
}

/// What one configuration file names, found from its text alone (no file is read).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct References {
    pub(crate) files: Vec<Reference>,
    pub(crate) marks: Vec<LineMark>,
}

impl Files {
    /// Marks the lines `marks` of `file`.
    fn mark(&mut self, file: &Path, marks: &[LineMark]) {
        for m in marks {
            self.mark_line(file, m.line, m.secret, m.personal);
        }
    }

    /// Reads the files `r` (made in `file`) names: its path, the matches of its pattern, or the
    /// files of a HAProxy `crt` folder. Returns those read for the first time, in order.
    fn follow(&mut self, file: &Path, r: &Reference) -> Result<Vec<PathBuf>> {
        let from = Origin {
            file,
            line: r.line,
            directive: &r.directive,
        };
        let paths = if r.pattern {
            self.glob(&r.path, &from)?
        } else if r.role == "certificate" && r.directive == "crt" && r.path.is_dir() {
            // A crt directory: HAProxy loads every file in it.
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&r.path)
                .map_err(|e| Error::io(format!("listing {}", r.path.display()), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            entries
        } else {
            vec![r.path.clone()]
        };
        let mut new = vec![];
        for p in paths {
            if self.add(&p, r.role, &from)? {
                new.push(p);
            }
        }
        Ok(new)
    }

    /// The files matching `pattern`, sorted (none is fine).
    fn glob(&self, pattern: &Path, from: &Origin) -> Result<Vec<PathBuf>> {
        let text = pattern.to_string_lossy().into_owned();
        let paths = glob::glob(&text).map_err(|e| {
            Error::gateway(
                self.describe.clone(),
                format!(
                    "`{} {}` at {}:{} is not a valid pattern ({e}): fix the directive",
                    from.directive,
                    pattern.display(),
                    from.file.display(),
                    from.line
                ),
            )
        })?;
        let mut out: Vec<PathBuf> = paths
            .filter_map(|r| r.ok())
            .filter(|p| p.is_file())
            .collect();
        out.sort();
        Ok(out)
    }
}

fn nginx_refs(files: &mut Files, main: &Path, base: &Path) -> Result<()> {
    let mut queue = vec![main.to_path_buf()];
    while let Some(file) = queue.pop() {
        let refs = nginx_references(&file, &files.text(&file), base);
        files.mark(&file, &refs.marks);
        for r in &refs.files {
            let new = files.follow(&file, r)?;
            if r.include {
                queue.extend(new);
            }
        }
    }
    Ok(())
}

/// The files nginx config text (of `file`, for messages) names: includes, certificates, keys, user
/// files; and the lines holding inline (`data:`) keys. Relative paths resolve against `base`.
pub(crate) fn nginx_references(file: &Path, text: &str, base: &Path) -> References {
    let mut out = References::default();
    for d in nginx_directives(text) {
        let Some(arg) = d.args.first() else { continue };
        if d.name == "include" {
            let in_map = d
                .blocks
                .iter()
                .any(|b| matches!(b.as_str(), "map" | "geo" | "split_clients"));
            if arg.contains('$') {
                tracing::warn!(
                    "{}:{}: include {arg} has variables: not followed",
                    file.display(),
                    d.line
                );
                continue;
            }
            out.files.push(Reference {
                directive: d.name.clone(),
                line: d.line,
                path: resolve(base, arg),
                role: if in_map { "map" } else { "include" },
                include: true,
                pattern: arg.contains(['*', '?', '[']),
            });
            continue;
        }
        let Some(role) = nginx_role(&d.name) else {
            continue;
        };
        if arg.starts_with("data:") {
            if role == "key" {
                out.marks.push(LineMark {
                    line: d.line,
                    secret: true,
                    personal: false,
                });
            }
            continue;
        }
        if arg.contains('$') || arg.starts_with("engine:") || arg.starts_with("store:") {
            tracing::warn!(
                "{}:{}: {} {arg} is not a plain file name: not captured",
                file.display(),
                d.line,
                d.name
            );
            continue;
        }
        out.files.push(Reference {
            directive: d.name.clone(),
            line: d.line,
            path: resolve(base, arg),
            role,
            include: false,
            pattern: false,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HAProxy

/// Splits one HAProxy config line into words (quotes and backslash escapes as HAProxy reads them,
/// `#` starting a comment outside quotes).
fn haproxy_words(line: &str) -> Vec<String> {
    let mut out = vec![];
    let mut w = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) => {
                if let Some(e) = chars.next() {
                    w.push(e);
                    in_word = true;
                }
            }
            (c, Some(q)) if c == q => quote = None,
            (c, Some(_)) => w.push(c),
            ('"' | '\'', None) => {
                quote = Some(c);
                in_word = true;
            }
            ('#', None) => break,
            (c, None) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut w));
                    in_word = false;
                }
            }
            (c, None) => {
                w.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(w);
    }
    out
}

/// File names inside converter and action arguments: `map_str(/etc/haproxy/hosts.map,default)`,
/// `set-map(file)`, `del-acl(file)`.
fn haproxy_map_files(word: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = word;
    while let Some(i) = rest.find('(') {
        let head = &rest[..i];
        let name = head
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .next()
            .unwrap_or("");
        let after = &rest[i + 1..];
        let end = after.find([',', ')']).unwrap_or(after.len());
        let is_map = name == "map"
            || name.starts_with("map_")
            || matches!(name, "set-map" | "del-map" | "add-acl" | "del-acl");
        if is_map && end > 0 {
            out.push(after[..end].trim().to_string());
        }
        rest = after;
    }
    out
}

const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "userlist",
    "peers",
    "resolvers",
    "http-errors",
    "ring",
    "cache",
    "program",
    "mailers",
    "crt-store",
    "log-forward",
];

fn haproxy_refs(files: &mut Files, main: &Path, base: &Path) -> Result<()> {
    let h = haproxy_references(main, &files.text(main), base);
    files.mark(main, &h.refs.marks);
    for r in &h.refs.files {
        for p in files.follow(main, r)? {
            if r.role == "crt-list" {
                for entry in crt_list_references(&files.text(&p), &h.crt_base, &h.ca_base).files {
                    files.follow(&p, &entry)?;
                }
            }
        }
    }
    Ok(())
}

/// What a HAProxy main config file names, and the folders its certificates resolve against.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HaproxyReferences {
    pub(crate) refs: References,
    /// `crt-base`, else the base folder.
    pub(crate) crt_base: PathBuf,
    /// `ca-base`, else the base folder.
    pub(crate) ca_base: PathBuf,
}

/// The files HAProxy config text (of `main`, for messages) names: certificates, crt-lists, CA and
/// CRL files, maps and ACL files, Lua scripts, error files; and the userlist lines (user names are
/// personal, passwords secret). Relative paths resolve against `base`, certificates against
/// `crt-base` / `ca-base`.
pub(crate) fn haproxy_references(main: &Path, text: &str, base: &Path) -> HaproxyReferences {
    let lines: Vec<Vec<String>> = text.lines().map(haproxy_words).collect();
    // crt-base and ca-base apply wherever they are set in the global section.
    let mut crt_base = base.to_path_buf();
    let mut ca_base = base.to_path_buf();
    for w in &lines {
        match (w.first().map(String::as_str), w.get(1)) {
            (Some("crt-base"), Some(d)) => crt_base = resolve(base, d),
            (Some("ca-base"), Some(d)) => ca_base = resolve(base, d),
            _ => {}
        }
    }
    let mut out = References::default();
    let mut section = "";
    for (i, w) in lines.iter().enumerate() {
        let Some(first) = w.first() else { continue };
        if SECTIONS.contains(&first.as_str()) {
            section = SECTIONS[SECTIONS.iter().position(|s| s == first).unwrap_or(0)];
            continue;
        }
        let line = i + 1;
        if section == "userlist" && first == "user" {
            // A user name is personal; its password (or hash) secret.
            let has_pw = w
                .iter()
                .any(|x| x == "password" || x == "insecure-password");
            out.marks.push(LineMark {
                line,
                secret: has_pw,
                personal: true,
            });
            continue;
        }
        let mut refs: Vec<(String, PathBuf, &'static str)> = vec![];
        let single = |kw: &str| -> Option<&'static str> {
            match kw {
                "lua-load" | "lua-load-per-thread" => Some("script"),
                "ssl-dh-param-file" => Some("dhparam"),
                _ => None,
            }
        };
        if let (Some(role), Some(arg)) = (single(first), w.get(1)) {
            refs.push((first.clone(), resolve(base, arg), role));
        }
        if first == "errorfile" {
            if let Some(arg) = w.get(2) {
                refs.push((first.clone(), resolve(base, arg), "errorfile"));
            }
        }
        for (j, word) in w.iter().enumerate() {
            let next = w.get(j + 1);
            match (word.as_str(), next) {
                ("crt", Some(arg)) => {
                    refs.push((word.clone(), resolve(&crt_base, arg), "certificate"))
                }
                // The list itself is not under crt-base; the certificates it names are.
                ("crt-list", Some(arg)) => {
                    refs.push((word.clone(), resolve(base, arg), "crt-list"))
                }
                ("ca-file" | "ca-verify-file" | "crl-file", Some(arg)) => {
                    let role = if word == "crl-file" {
                        "crl"
                    } else {
                        "certificate"
                    };
                    refs.push((word.clone(), resolve(&ca_base, arg), role))
                }
                ("-f", Some(arg)) => refs.push((format!("{first} -f"), resolve(base, arg), "map")),
                _ => {}
            }
            for m in haproxy_map_files(word) {
                refs.push((word.clone(), resolve(base, &m), "map"));
            }
        }
        for (directive, path, role) in refs {
            if path.to_string_lossy().contains('$') {
                tracing::warn!(
                    "{}:{line}: {directive} {} uses an environment variable: not captured",
                    main.display(),
                    path.display()
                );
                continue;
            }
            out.files.push(Reference {
                directive,
                line,
                path,
                role,
                include: false,
                pattern: false,
            });
        }
    }
    HaproxyReferences {
        refs: out,
        crt_base,
        ca_base,
    }
}

/// The certificates a crt-list (its text) names: the first word of each line, and `ca-file` /
/// `crl-file` in its bracketed options.
pub(crate) fn crt_list_references(text: &str, crt_base: &Path, ca_base: &Path) -> References {
    let mut out = References::default();
    for (i, line) in text.lines().enumerate() {
        let w = haproxy_words(line);
        let Some(first) = w.first() else { continue };
        let entry = |path: PathBuf, role: &'static str| Reference {
            directive: "crt-list entry".into(),
            line: i + 1,
            path,
            role,
            include: false,
            pattern: false,
        };
        out.files
            .push(entry(resolve(crt_base, first), "certificate"));
        for (j, word) in w.iter().enumerate() {
            let word = word.trim_start_matches('[');
            if let ("ca-file" | "crl-file", Some(arg)) = (word, w.get(j + 1)) {
                let arg = arg.trim_end_matches(']');
                let role = if word == "crl-file" {
                    "crl"
                } else {
                    "certificate"
                };
                out.files.push(entry(resolve(ca_base, arg), role));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Checker

/// The gateway binary: on `PATH`, or in the sbin folders where distributions put it.
pub(crate) fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The version the binary reports (`nginx -v`, `haproxy -v`).
fn version(kind: &str, bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("-v").output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let first = text.lines().next()?;
    if kind == "haproxy" {
        // "HAProxy version 2.6.12-1 2023/12/01 - https://haproxy.org/"
        first.split_whitespace().nth(2).map(str::to_string)
    } else {
        // "nginx version: nginx/1.22.1"
        first.rsplit('/').next().map(|v| v.trim().to_string())
    }
}

/// Runs the checker on `main`; a rejection is an error carrying its output.
pub(crate) fn validate(source: &Source, kind: &str, bin: &Path, main: &Path) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!(
        "gatevault-check-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let mut cmd = Command::new(bin);
    if kind == "haproxy" {
        cmd.arg("-c").arg("-f").arg(main);
        if let Some(dir) = main.parent() {
            cmd.current_dir(dir);
        }
    } else {
        // A scratch prefix: relative pid, log and temp paths land there instead of in the
        // real prefix, so that checking needs no write access to the gateway's folders.
        std::fs::create_dir_all(&scratch)
            .map_err(|e| Error::io(format!("creating {}", scratch.display()), e))?;
        cmd.arg("-t")
            .arg("-c")
            .arg(main)
            .arg("-p")
            .arg(format!("{}/", scratch.display()))
            .arg("-e")
            .arg(scratch.join("error.log"));
    }
    let shown = std::iter::once(bin.as_os_str())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd.output();
    let _ = std::fs::remove_dir_all(&scratch);
    let out = out.map_err(|e| {
        Error::gateway(
            source.describe(),
            format!(
                "cannot run {} ({e}): pass --no-validate to skip the check",
                bin.display()
            ),
        )
    })?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Err(Error::gateway(
        source.describe(),
        format!(
            "the configuration check `{shown}` failed:\n{}\nfix the configuration, or pass --no-validate to back it up as it is",
            text.trim_end()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_directives_keep_quotes_comments_and_blocks_apart() {
        let d = nginx_directives(
            "http { # c { ;\n  include \"a b/*.conf\";\n map $x $y { include m.map; }\n set $v \"${a}x\"; }",
        );
        assert_eq!(d[0].name, "http");
        assert_eq!(d[1].name, "include");
        assert_eq!(d[1].args, vec!["a b/*.conf"]);
        assert_eq!(d[1].line, 2);
        assert_eq!(d[3].name, "include");
        assert_eq!(d[3].blocks, vec!["http", "map"]);
        assert_eq!(d[4].args, vec!["$v", "${a}x"]);
    }

    #[test]
    fn an_escaped_line_break_in_quotes_still_counts_as_a_line() {
        let d = nginx_directives("set $a \"x\\\ny\";\nssl_certificate_key data:k;\n");
        assert_eq!(d[1].name, "ssl_certificate_key");
        assert_eq!(d[1].line, 3);
    }

    #[test]
    fn only_names_nginx_accepts_are_directives_with_files() {
        // A quoted name is a name; one spanning lines is none nginx knows.
        let text = "\"ssl_certificate\" a.pem;\n\"x\nproxy_ssl_certificate\" b.pem;\n";
        let r = nginx_references(Path::new("/n/nginx.conf"), text, Path::new("/n"));
        let found: Vec<_> = r.files.iter().map(|f| (f.line, f.path.clone())).collect();
        assert_eq!(found, vec![(1, PathBuf::from("/n/a.pem"))]);
    }

    #[test]
    fn references_resolve_and_mark_lines_without_reading_files() {
        let text = "http {\n include conf.d/*.conf;\n ssl_certificate_key ../k.pem;\n ssl_certificate_key data:x;\n}\n";
        let r = nginx_references(
            Path::new("/etc/nginx/nginx.conf"),
            text,
            Path::new("/etc/nginx"),
        );
        assert_eq!(r.files.len(), 2);
        assert!(r.files[0].include && r.files[0].pattern);
        assert_eq!(r.files[0].path, PathBuf::from("/etc/nginx/conf.d/*.conf"));
        assert_eq!((r.files[1].role, r.files[1].line), ("key", 3));
        assert_eq!(r.files[1].path, PathBuf::from("/etc/k.pem"));
        assert_eq!(
            r.marks,
            vec![LineMark {
                line: 4,
                secret: true,
                personal: false
            }]
        );
        let h = haproxy_references(
            Path::new("/h/haproxy.cfg"),
            "global\n crt-base certs\nuserlist u\n user a password x\nfrontend f\n bind :443 crt site.pem crt-list l.txt\n",
            Path::new("/h"),
        );
        assert_eq!(h.crt_base, PathBuf::from("/h/certs"));
        let paths: Vec<_> = h
            .refs
            .files
            .iter()
            .map(|r| (r.role, r.path.clone()))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("certificate", PathBuf::from("/h/certs/site.pem")),
                ("crt-list", PathBuf::from("/h/l.txt"))
            ]
        );
        assert_eq!(
            h.refs.marks,
            vec![LineMark {
                line: 4,
                secret: true,
                personal: true
            }]
        );
        let l = crt_list_references("a.pem [ca-file ca.crt]\n", &h.crt_base, &h.ca_base);
        assert_eq!(l.files[0].path, PathBuf::from("/h/certs/a.pem"));
        assert_eq!(l.files[1].path, PathBuf::from("/h/ca.crt"));
    }

    #[test]
    fn haproxy_words_and_map_files() {
        assert_eq!(
            haproxy_words(r#"  bind :443 ssl crt "/a b.pem" # comment"#),
            vec!["bind", ":443", "ssl", "crt", "/a b.pem"]
        );
        assert_eq!(
            haproxy_map_files("req.hdr(host),lower,map_dom(/etc/haproxy/hosts.map,be_default)"),
            vec!["/etc/haproxy/hosts.map"]
        );
        assert_eq!(haproxy_map_files("set-map(maps/a.map)"), vec!["maps/a.map"]);
        assert!(haproxy_map_files("hdr(host)").is_empty());
    }

    #[test]
    fn paths_normalize_lexically() {
        assert_eq!(
            resolve(Path::new("/etc/nginx"), "../ssl/./k.pem"),
            PathBuf::from("/etc/ssl/k.pem")
        );
        assert_eq!(
            resolve(Path::new("/etc/nginx"), "/abs/x"),
            PathBuf::from("/abs/x")
        );
    }
}
