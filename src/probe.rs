//! Post-recovery probes: real HTTP requests through a gateway, checked against expectations
//! (see `docs/probes.md`).
//!
//! A probe file (TOML) lists `[[probe]]` tables, each a request (method, path, headers, body) and
//! what its answer must show (status, headers, body text, JSON values). A probe with a `rate_limit`
//! table sends its request up to N times back to back and expects the limiter's status (429) by
//! the Nth. `gatevault probe` runs a file on its own; `gatevault restore --probes` runs one as the
//! last step of a restore and puts the [`ProbeReport`] in the Go-Live report.
//!
//! [`load`] is strict: an unknown field or an impossible value is an error naming the probe and the
//! field, because a misspelt expectation would otherwise be a check that silently never runs.
//! [`run`] never fails: a gateway that cannot be reached is a failed probe whose detail says so.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Seconds a request may take when neither its probe nor `[defaults]` sets `timeout_secs`.
pub const DEFAULT_TIMEOUT_SECS: f64 = 10.0;

/// Longest `timeout_secs` and `window_secs` accepted.
pub const MAX_SECS: f64 = 3600.0;

/// Most requests one rate-limit probe may send.
pub const MAX_RATE_LIMIT_REQUESTS: u32 = 1000;

/// Largest part of an answer's body that is read and checked.
const MAX_BODY: u64 = 4 << 20;

/// Longest excerpt of a body or value quoted in a detail.
const EXCERPT: usize = 160;

/// A probe file (`probes.toml`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeFile {
    /// What every probe gets unless it says otherwise.
    #[serde(default)]
    pub defaults: Defaults,
    /// The probes, run in order.
    #[serde(default, rename = "probe")]
    pub probes: Vec<Probe>,
}

/// The `[defaults]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Headers sent with every request (a probe's own headers of the same name win).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Seconds a request may take ([`DEFAULT_TIMEOUT_SECS`] when absent).
    pub timeout_secs: Option<f64>,
}

/// One `[[probe]]`: a request and what its answer must show.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Unique name, shown in reports.
    pub name: String,
    /// HTTP method (`GET` when absent).
    #[serde(default = "default_method")]
    pub method: String,
    /// Path and query, starting with `/`, appended to the base URL.
    pub path: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Default headers not to send with this probe (to see a request without the API key).
    #[serde(default)]
    pub omit_headers: Vec<String>,
    /// Request body.
    pub body: Option<String>,
    /// Seconds each request may take.
    pub timeout_secs: Option<f64>,
    /// What the answer must show (for a rate-limit probe: the limited answer).
    #[serde(default)]
    pub expect: Expect,
    /// Makes this a rate-limit probe.
    pub rate_limit: Option<RateLimit>,
}

fn default_method() -> String {
    "GET".into()
}

/// The `[probe.expect]` table. Every expectation given must hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Accepted statuses; absent means any 2xx.
    pub status: Option<Statuses>,
    /// Expectations on answer headers, by (case-insensitive) name.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderCheck>,
    /// Texts the body must contain.
    #[serde(default, deserialize_with = "one_or_many")]
    pub body_contains: Vec<String>,
    /// JSON pointer (RFC 6901, `/items/0/id`) to the value the body must have there.
    #[serde(default)]
    pub json: BTreeMap<String, Value>,
}

/// A `[probe.rate_limit]` table: send up to `requests` requests within `window_secs` and expect
/// `status` by the last one.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Most requests sent, back to back; the limited status must come by the last.
    pub requests: u32,
    /// Seconds within which the requests must be sent (the limiter's window): when it has passed
    /// before the limit showed, the probe fails rather than send into a refilled limiter.
    pub window_secs: f64,
    /// The status that shows the limit (429 when absent).
    #[serde(default = "default_limited_status")]
    pub status: u16,
    /// How many requests must be let through before the limit shows (0: any number).
    #[serde(default)]
    pub allowed: u32,
    /// Statuses the requests before the limit must have; absent means any 2xx.
    pub allowed_status: Option<Statuses>,
}

fn default_limited_status() -> u16 {
    429
}

/// One status or a list of them (`status = 200` or `status = [200, 204]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statuses(pub Vec<u16>);

/// An expectation on one answer header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderCheck {
    /// The value is exactly this (`"Name" = "value"` or `{ equals = "value" }`).
    Equals(String),
    /// The value contains this text (`{ contains = "POST" }`).
    Contains(String),
    /// The header is there (`{ present = true }`).
    Present,
    /// The header is not there (`{ absent = true }` or `{ present = false }`).
    Absent,
}

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The probe's name.
    pub name: String,
    /// Whether every expectation held.
    pub passed: bool,
    /// Requests sent.
    pub requests: u32,
    /// What was seen, or what did not hold (expected and seen).
    pub detail: String,
    /// Milliseconds taken.
    pub ms: u64,
    /// The status of the last answer, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// The results of a probe file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The base URL probed.
    pub base_url: String,
    /// One result per probe.
    pub results: Vec<ProbeResult>,
}

impl ProbeReport {
    /// Probes that failed.
    pub fn failures(&self) -> usize {
        self.results.iter().filter(|r| !r.passed).count()
    }

    /// Whether every probe passed.
    pub fn passed(&self) -> bool {
        self.failures() == 0
    }
}

// ------------------------------------------------------------------------------------ reading

/// Reads and validates a probe file.
///
/// # Errors
/// [`Error::Io`] when it cannot be read; [`Error::InvalidInput`] naming the file, the line, the
/// probe and the field when it is not a valid probe file.
pub fn load(path: &Path) -> Result<ProbeFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading probe file {}", path.display()), e))?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates the text of a probe file; `origin` names it in errors.
///
/// # Errors
/// [`Error::InvalidInput`] as for [`load`].
pub fn parse(text: &str, origin: &str) -> Result<ProbeFile> {
    let fail = |m: String| Error::InvalidInput(format!("probe file {origin}: {m}"));
    let file: ProbeFile = toml::from_str(text).map_err(|e| fail(toml_error(text, &e)))?;
    validate(&file).map_err(fail)?;
    Ok(file)
}

/// A TOML or shape error as `line L, column C, in probe N ("name"): message`.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    let Some(span) = e.span() else {
        return msg.to_string();
    };
    let Some(before) = text.get(..span.start) else {
        return msg.to_string();
    };
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    // The table headers up to the end of the error's line (a missing field is reported at the
    // start of its table's header line).
    let line_end = text[before.len()..]
        .find('\n')
        .map_or(text.len(), |i| before.len() + i);
    let probe = probe_at(text, &text[..line_end])
        .map(|p| format!(", in {p}"))
        .unwrap_or_default();
    format!("line {line}, column {column}{probe}: {msg}")
}

/// Which `[[probe]]` the text `upto` ends in, described (`probe 2 ("name")`).
fn probe_at(text: &str, upto: &str) -> Option<String> {
    let mut current = None;
    let mut count = 0;
    for line in upto.lines() {
        let l = line.trim_start();
        if l.starts_with("[[probe]]") {
            count += 1;
            current = Some(count);
        } else if l.starts_with('[') && !l.starts_with("[probe.") && !l.starts_with("[[probe.") {
            current = None;
        }
    }
    let n = current?;
    // The name, when the file parses as TOML at all (a shape error, not a syntax error).
    let name = text.parse::<toml::Table>().ok().and_then(|t| {
        t.get("probe")?
            .as_array()?
            .get(n - 1)?
            .get("name")?
            .as_str()
            .map(str::to_string)
    });
    Some(match name {
        Some(name) => format!("probe {n} ({name:?})"),
        None => format!("probe {n}"),
    })
}

/// Checks what the types cannot: ranges, names, header syntax, combinations.
fn validate(file: &ProbeFile) -> std::result::Result<(), String> {
    if file.probes.is_empty() {
        return Err("no probes: add at least one [[probe]] table".into());
    }
    check_headers("[defaults] headers", &file.defaults.headers)?;
    check_timeout("[defaults] timeout_secs", file.defaults.timeout_secs)?;
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, p) in file.probes.iter().enumerate() {
        let n = i + 1;
        let at = |m: String| format!("probe {n} ({:?}): {m}", p.name);
        if p.name.trim().is_empty() {
            return Err(format!("probe {n}: name is empty: give every probe a name"));
        }
        if let Some(first) = names.insert(&p.name, n) {
            return Err(at(format!(
                "name is used by probe {first} too: names must be unique"
            )));
        }
        validate_probe(p, &file.defaults).map_err(at)?;
    }
    Ok(())
}

fn validate_probe(p: &Probe, defaults: &Defaults) -> std::result::Result<(), String> {
    if !is_token(&p.method) {
        return Err(format!("method {:?} is not an HTTP method", p.method));
    }
    if !p.path.starts_with('/') || p.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "path {:?} must start with / and have no spaces (encode them as %20)",
            p.path
        ));
    }
    check_headers("headers", &p.headers)?;
    for h in &p.omit_headers {
        if !defaults.headers.keys().any(|d| d.eq_ignore_ascii_case(h)) {
            return Err(format!(
                "omit_headers names {h:?}, which is not in [defaults] headers"
            ));
        }
    }
    check_timeout("timeout_secs", p.timeout_secs)?;
    let e = &p.expect;
    if let Some(s) = &e.status {
        check_statuses("expect.status", s)?;
    }
    let mut seen: Vec<String> = vec![];
    for name in e.headers.keys() {
        if !is_token(name) {
            return Err(format!(
                "expect.headers: {name:?} is not a valid header name"
            ));
        }
        let lower = name.to_ascii_lowercase();
        if seen.contains(&lower) {
            return Err(format!(
                "expect.headers names {name:?} twice (header names ignore case)"
            ));
        }
        seen.push(lower);
    }
    if e.body_contains.iter().any(String::is_empty) {
        return Err("expect.body_contains has an empty text".into());
    }
    for (pointer, value) in &e.json {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(format!(
                "expect.json key {pointer:?} is not a JSON pointer: start it with / (\"/items/0/id\")"
            ));
        }
        if contains_toml_datetime(value) {
            return Err(format!(
                "expect.json {pointer:?}: TOML dates and times are not JSON values: quote them as a string"
            ));
        }
    }
    if let Some(r) = &p.rate_limit {
        if e.status.is_some() {
            return Err(
                "expect.status cannot be used with rate_limit: the limited status is rate_limit.status"
                    .into(),
            );
        }
        if r.requests == 0 || r.requests > MAX_RATE_LIMIT_REQUESTS {
            return Err(format!(
                "rate_limit.requests is {}: it must be between 1 and {MAX_RATE_LIMIT_REQUESTS}",
                r.requests
            ));
        }
        if !(r.window_secs > 0.0 && r.window_secs <= MAX_SECS) {
            return Err(format!(
                "rate_limit.window_secs is {}: it must be more than 0 and at most {MAX_SECS}",
                r.window_secs
            ));
        }
        check_statuses("rate_limit.status", &Statuses(vec![r.status]))?;
        if r.allowed >= r.requests {
            return Err(format!(
                "rate_limit.allowed is {} but requests is {}: allow fewer requests than are sent, so that the limit can show",
                r.allowed, r.requests
            ));
        }
        if let Some(a) = &r.allowed_status {
            check_statuses("rate_limit.allowed_status", a)?;
            if a.0.contains(&r.status) {
                return Err(format!(
                    "rate_limit.allowed_status contains the limited status {}",
                    r.status
                ));
            }
        }
    }
    Ok(())
}

fn check_statuses(field: &str, s: &Statuses) -> std::result::Result<(), String> {
    if s.0.is_empty() {
        return Err(format!("{field} is an empty list"));
    }
    match s.0.iter().find(|c| !(100..=599).contains(*c)) {
        Some(c) => Err(format!("{field}: {c} is not an HTTP status (100 to 599)")),
        None => Ok(()),
    }
}

fn check_timeout(field: &str, t: Option<f64>) -> std::result::Result<(), String> {
    match t {
        Some(t) if !(t > 0.0 && t <= MAX_SECS) => Err(format!(
            "{field} is {t}: it must be more than 0 and at most {MAX_SECS}"
        )),
        _ => Ok(()),
    }
}

fn check_headers(field: &str, h: &BTreeMap<String, String>) -> std::result::Result<(), String> {
    for (k, v) in h {
        if !is_token(k) {
            return Err(format!("{field}: {k:?} is not a valid header name"));
        }
        if v.chars().any(|c| c.is_control() && c != '\t') {
            return Err(format!(
                "{field}: the value of {k:?} has a control character (line break?)"
            ));
        }
    }
    Ok(())
}

/// An RFC 9110 token (header names, methods).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether a value deserialized from TOML holds a TOML date (which serde shows as a private map).
fn contains_toml_datetime(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.keys().any(|k| k.starts_with("$__toml_private"))
                || m.values().any(contains_toml_datetime)
        }
        Value::Array(a) => a.iter().any(contains_toml_datetime),
        _ => false,
    }
}

impl<'de> Deserialize<'de> for Statuses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        fn status<E: de::Error>(v: i64) -> std::result::Result<u16, E> {
            u16::try_from(v)
                .map_err(|_| E::custom(format!("{v} is not an HTTP status (100 to 599)")))
        }
        impl<'de> Visitor<'de> for V {
            type Value = Statuses;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an HTTP status or a list of them (200 or [200, 204])")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Statuses, E> {
                Ok(Statuses(vec![status(v)?]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Statuses, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<Statuses, A::Error> {
                let mut out = vec![];
                while let Some(v) = a.next_element::<i64>()? {
                    out.push(status(v)?);
                }
                Ok(Statuses(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for HeaderCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Rule {
            equals: Option<String>,
            contains: Option<String>,
            present: Option<bool>,
            absent: Option<bool>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderCheck;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a header value, or a table with one of equals, contains, present, absent",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<HeaderCheck, E> {
                Ok(HeaderCheck::Equals(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                a: A,
            ) -> std::result::Result<HeaderCheck, A::Error> {
                let r = Rule::deserialize(de::value::MapAccessDeserializer::new(a))?;
                let given = [
                    r.equals.is_some(),
                    r.contains.is_some(),
                    r.present.is_some(),
                    r.absent.is_some(),
                ];
                if given.iter().filter(|g| **g).count() != 1 {
                    return Err(de::Error::custom(
                        "a header expectation has exactly one of equals, contains, present, absent",
                    ));
                }
                Ok(match r {
                    Rule {
                        equals: Some(v), ..
                    } => HeaderCheck::Equals(v),
                    Rule {
                        contains: Some(v), ..
                    } => HeaderCheck::Contains(v),
                    Rule {
                        present: Some(p), ..
                    } => {
                        if p {
                            HeaderCheck::Present
                        } else {
                            HeaderCheck::Absent
                        }
                    }
                    Rule {
                        absent: Some(a), ..
                    } => {
                        if a {
                            HeaderCheck::Absent
                        } else {
                            HeaderCheck::Present
                        }
                    }
                    _ => unreachable!("exactly one field is set"),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A text or a list of texts.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a text or a list of texts")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> std::result::Result<Vec<String>, A::Error> {
            let mut out = vec![];
            while let Some(v) = a.next_element::<String>()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

// ------------------------------------------------------------------------------------ running

/// Checks that `url` can be a base URL: `http://` or `https://` and a host.
///
/// # Errors
/// [`Error::InvalidInput`] saying what is wrong.
pub fn check_base_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(()),
        _ => Err(Error::InvalidInput(format!(
            "base URL {url:?} is not an http:// or https:// URL with a host (http://127.0.0.1:8000)"
        ))),
    }
}

/// Runs every probe of `file` against `base_url`, in order. Never fails: a request that cannot
/// be sent or answered is a failed probe whose detail says why.
pub fn run(file: &ProbeFile, base_url: &str) -> ProbeReport {
    // Redirects are answers to check, not to follow.
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .user_agent(&format!("gatevault/{} probe", env!("CARGO_PKG_VERSION")))
        .build();
    let base = base_url.trim_end_matches('/');
    ProbeReport {
        base_url: base_url.into(),
        results: file
            .probes
            .iter()
            .map(|p| run_probe(&agent, &file.defaults, p, base))
            .collect(),
    }
}

/// One request as sent.
struct Request<'a> {
    method: String,
    url: String,
    /// `METHOD /path`, for details.
    label: String,
    headers: Vec<(&'a str, &'a str)>,
    body: Option<&'a str>,
    timeout: Duration,
}

impl<'a> Request<'a> {
    fn new(defaults: &'a Defaults, p: &'a Probe, base: &str) -> Self {
        let method = p.method.to_ascii_uppercase();
        let mut headers: Vec<(&str, &str)> = defaults
            .headers
            .iter()
            .filter(|(k, _)| {
                !p.omit_headers.iter().any(|o| o.eq_ignore_ascii_case(k))
                    && !p.headers.keys().any(|o| o.eq_ignore_ascii_case(k))
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers.extend(p.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let secs = p
            .timeout_secs
            .or(defaults.timeout_secs)
            .unwrap_or(DEFAULT_TIMEOUT_SECS);
        Self {
            label: format!("{method} {}", p.path),
            url: format!("{base}{}", p.path),
            method,
            headers,
            body: p.body.as_deref(),
            timeout: Duration::try_from_secs_f64(secs)
                .unwrap_or(Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS)),
        }
    }
}

/// An answer, whatever its status.
#[derive(Clone, Debug, Default)]
struct Answer {
    status: u16,
    /// Lower-case names; repeated headers joined with `, `.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `r`; any status is an answer. `Err` says why there was none.
fn send(agent: &ureq::Agent, r: &Request) -> std::result::Result<Answer, String> {
    let mut req = agent.request(&r.method, &r.url).timeout(r.timeout);
    for (k, v) in &r.headers {
        req = req.set(k, v);
    }
    let sent = match r.body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let resp = match sent {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
        Err(ureq::Error::Transport(t)) => return Err(transport(r, &t)),
    };
    let status = resp.status();
    let mut names = resp.headers_names();
    names.dedup();
    let mut headers: Vec<(String, String)> = vec![];
    for n in names {
        if headers.iter().all(|(k, _)| *k != n) {
            let v = resp.all(&n).join(", ");
            headers.push((n, v));
        }
    }
    let mut body = vec![];
    if let Err(e) = resp.into_reader().take(MAX_BODY).read_to_end(&mut body) {
        return Err(format!(
            "the answer ({status}) from {} broke off: {e}",
            r.url
        ));
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Why a request got no answer, and what to check.
fn transport(r: &Request, t: &ureq::Transport) -> String {
    let io = std::error::Error::source(t).and_then(|s| s.downcast_ref::<std::io::Error>());
    let cause = match (io, t.message()) {
        (Some(e), _) => e.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => t.kind().to_string(),
    };
    let timed_out = io.is_some_and(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        )
    });
    let secs = r.timeout.as_secs_f64();
    match t.kind() {
        ureq::ErrorKind::ConnectionFailed => format!(
            "cannot connect to {}: is the gateway listening? ({cause})",
            authority(&r.url)
        ),
        ureq::ErrorKind::Dns => format!(
            "cannot resolve the host of {}: check the base URL ({cause})",
            r.url
        ),
        ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => format!(
            "{} is not a valid http:// or https:// URL: check the base URL and path",
            r.url
        ),
        ureq::ErrorKind::Io if timed_out => {
            format!("no answer from {} within {secs} s (timeout_secs)", r.url)
        }
        _ => format!("{} failed: {t}", r.url),
    }
}

/// `host:port` of a URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

fn run_probe(agent: &ureq::Agent, defaults: &Defaults, p: &Probe, base: &str) -> ProbeResult {
    let t0 = Instant::now();
    let req = Request::new(defaults, p, base);
    let o = match &p.rate_limit {
        None => single(agent, &req, &p.expect),
        Some(rl) => limited(agent, &req, &p.expect, rl),
    };
    ProbeResult {
        name: p.name.clone(),
        passed: o.passed,
        requests: o.requests,
        detail: o.detail,
        ms: t0.elapsed().as_millis() as u64,
        status: o.status,
    }
}

/// What one probe came to.
struct Outcome {
    passed: bool,
    requests: u32,
    status: Option<u16>,
    detail: String,
}

impl Outcome {
    fn fail(requests: u32, status: Option<u16>, detail: String) -> Self {
        Self {
            passed: false,
            requests,
            status,
            detail,
        }
    }
}

fn single(agent: &ureq::Agent, r: &Request, e: &Expect) -> Outcome {
    let a = match send(agent, r) {
        Ok(a) => a,
        Err(why) => return Outcome::fail(1, None, format!("{}: {why}", r.label)),
    };
    let mut failures = vec![];
    if let Some(f) = status_failure(e.status.as_ref(), a.status, "status") {
        failures.push(f);
    }
    failures.extend(check_answer(e, &a));
    verdict(1, &a, format!("{} -> {}", r.label, a.status), failures)
}

fn verdict(requests: u32, a: &Answer, seen: String, failures: Vec<String>) -> Outcome {
    Outcome {
        passed: failures.is_empty(),
        requests,
        status: Some(a.status),
        detail: if failures.is_empty() {
            seen
        } else {
            format!("{seen}: {}", failures.join("; "))
        },
    }
}

fn limited(agent: &ureq::Agent, r: &Request, e: &Expect, rl: &RateLimit) -> Outcome {
    let window = Duration::try_from_secs_f64(rl.window_secs).unwrap_or(Duration::MAX);
    let start = Instant::now();
    let mut seen: Vec<u16> = vec![];
    let n = rl.requests.clamp(1, MAX_RATE_LIMIT_REQUESTS);
    for i in 1..=n {
        if i > 1 && start.elapsed() > window {
            return Outcome::fail(
                i - 1,
                seen.last().copied(),
                format!(
                    "{}: expected {} within the {} s window, but {} request(s) took {:.2} s without it (got {}): lower rate_limit.requests or raise window_secs",
                    r.label,
                    rl.status,
                    rl.window_secs,
                    i - 1,
                    start.elapsed().as_secs_f64(),
                    status_list(&seen)
                ),
            );
        }
        let a = match send(agent, r) {
            Ok(a) => a,
            Err(why) => {
                return Outcome::fail(
                    i,
                    seen.last().copied(),
                    format!("{}: request {i}: {why}", r.label),
                )
            }
        };
        if a.status == rl.status {
            let before = if seen.is_empty() {
                String::new()
            } else {
                format!(" (after {})", status_list(&seen))
            };
            let label = format!("{} -> {} at request {i}{before}", r.label, a.status);
            if i <= rl.allowed {
                return Outcome::fail(
                    i,
                    Some(a.status),
                    format!(
                        "{label}: expected the first {} requests to be let through, got {} at request {i}",
                        rl.allowed, a.status
                    ),
                );
            }
            return verdict(i, &a, label, check_answer(e, &a));
        }
        let what = format!("request {i} (before the limit)");
        if let Some(f) = status_failure(rl.allowed_status.as_ref(), a.status, &what) {
            return Outcome::fail(
                i,
                Some(a.status),
                format!("{} -> {}: {f}", r.label, a.status),
            );
        }
        seen.push(a.status);
    }
    Outcome::fail(
        n,
        seen.last().copied(),
        format!(
            "{}: expected {} by request {n}, got {}",
            r.label,
            rl.status,
            status_list(&seen)
        ),
    )
}

/// `None` when `status` is one of `want` (any 2xx when `want` is absent), else what failed.
fn status_failure(want: Option<&Statuses>, status: u16, what: &str) -> Option<String> {
    let ok = match want {
        Some(s) => s.0.contains(&status),
        None => (200..300).contains(&status),
    };
    if ok {
        return None;
    }
    let expected = match want.map(|s| s.0.as_slice()) {
        None => "a 2xx status".to_string(),
        Some([one]) => one.to_string(),
        Some(many) => format!(
            "one of {}",
            many.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Some(format!("{what}: expected {expected}, got {status}"))
}

/// Statuses in order; long runs of one status shortened (`200 x 40, 429`).
fn status_list(s: &[u16]) -> String {
    if s.len() <= 8 {
        return s.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    }
    let mut runs: Vec<(u16, usize)> = vec![];
    for &c in s {
        match runs.last_mut() {
            Some((last, n)) if *last == c => *n += 1,
            _ => runs.push((c, 1)),
        }
    }
    runs.iter()
        .map(|(c, n)| {
            if *n == 1 {
                c.to_string()
            } else {
                format!("{c} x {n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every header, body and JSON expectation that `a` does not meet, each as `what: expected X, got Y`.
fn check_answer(e: &Expect, a: &Answer) -> Vec<String> {
    let mut out = vec![];
    for (name, check) in &e.headers {
        let seen = a.header(name);
        let got = || match seen {
            Some(v) => format!("{:?}", excerpt(v)),
            None => "no such header".to_string(),
        };
        let failure = match check {
            HeaderCheck::Equals(want) if seen.map(str::trim) != Some(want.trim()) => {
                Some(format!("expected {want:?}, got {}", got()))
            }
            HeaderCheck::Contains(want) if !seen.is_some_and(|v| v.contains(want.as_str())) => {
                Some(format!(
                    "expected a value containing {want:?}, got {}",
                    got()
                ))
            }
            HeaderCheck::Present if seen.is_none() => {
                Some("expected the header, got no such header".to_string())
            }
            HeaderCheck::Absent if seen.is_some() => {
                Some(format!("expected no such header, got {}", got()))
            }
            _ => None,
        };
        if let Some(f) = failure {
            out.push(format!("header {name}: {f}"));
        }
    }
    let text = String::from_utf8_lossy(&a.body);
    for want in &e.body_contains {
        if !text.contains(want.as_str()) {
            out.push(format!(
                "body: expected it to contain {want:?}, got {}",
                body_excerpt(&text)
            ));
        }
    }
    if !e.json.is_empty() {
        match serde_json::from_slice::<Value>(&a.body) {
            Err(err) => out.push(format!(
                "JSON {}: expected a JSON body, got {} ({err})",
                e.json.keys().cloned().collect::<Vec<_>>().join(", "),
                body_excerpt(&text)
            )),
            Ok(doc) => {
                for (pointer, want) in &e.json {
                    match doc.pointer(pointer) {
                        Some(v) if json_equal(want, v) => {}
                        Some(v) => out.push(format!(
                            "JSON {pointer}: expected {}, got {}",
                            json_text(want),
                            json_text(v)
                        )),
                        None => out.push(format!(
                            "JSON {pointer}: expected {}, got no value there",
                            json_text(want)
                        )),
                    }
                }
            }
        }
    }
    out
}

/// JSON equality where numbers compare by value (`3` equals `3.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn json_text(v: &Value) -> String {
    excerpt(&v.to_string())
}

fn body_excerpt(text: &str) -> String {
    if text.is_empty() {
        "an empty body".into()
    } else {
        format!("{:?}", excerpt(text))
    }
}

/// The first [`EXCERPT`] characters of `s`, with `...` when cut.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[defaults]
timeout_secs = 2.5
headers = { apikey = "secret", "User-Agent" = "probe-test" }

[[probe]]
name = "orders need a key"
path = "/orders"
omit_headers = ["apikey"]
expect.status = 401

[[probe]]
name = "preflight"
method = "options"
path = "/cart"
headers = { Origin = "https://shop.example.com", "Access-Control-Request-Method" = "POST" }
[probe.expect]
status = [200, 204]
body_contains = "x"
[probe.expect.headers]
"Access-Control-Allow-Origin" = "https://shop.example.com"
"Access-Control-Allow-Methods" = { contains = "POST" }
"Access-Control-Max-Age" = { present = true }
"X-Powered-By" = { absent = true }
"Server" = { present = false }

[[probe]]
name = "health"
path = "/health"
timeout_secs = 1
expect.json = { "/status" = "ok", "/version" = 3 }
expect.body_contains = ["ok", "db"]

[[probe]]
name = "login is limited"
path = "/login"
body = "{}"
[probe.rate_limit]
requests = 4
window_secs = 60
allowed = 3
allowed_status = 200
"#;

    fn err(text: &str) -> String {
        match parse(text, "p.toml") {
            Ok(f) => panic!("parsed: {f:?}"),
            Err(e) => {
                assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn parses_every_form() {
        let f = parse(FULL, "p.toml").unwrap();
        assert_eq!(f.defaults.timeout_secs, Some(2.5));
        assert_eq!(f.defaults.headers["apikey"], "secret");
        assert_eq!(f.probes.len(), 4);
        let p = &f.probes[0];
        assert_eq!(
            (p.method.as_str(), p.expect.status.clone()),
            ("GET", Some(Statuses(vec![401])))
        );
        let p = &f.probes[1];
        assert_eq!(p.expect.status, Some(Statuses(vec![200, 204])));
        assert_eq!(p.expect.body_contains, vec!["x"]);
        let h = &p.expect.headers;
        assert_eq!(
            h["Access-Control-Allow-Origin"],
            HeaderCheck::Equals("https://shop.example.com".into())
        );
        assert_eq!(
            h["Access-Control-Allow-Methods"],
            HeaderCheck::Contains("POST".into())
        );
        assert_eq!(h["Access-Control-Max-Age"], HeaderCheck::Present);
        assert_eq!(h["X-Powered-By"], HeaderCheck::Absent);
        assert_eq!(h["Server"], HeaderCheck::Absent);
        let p = &f.probes[2];
        assert_eq!(p.expect.json["/version"], serde_json::json!(3));
        assert_eq!(p.expect.body_contains, vec!["ok", "db"]);
        let r = f.probes[3].rate_limit.as_ref().unwrap();
        assert_eq!((r.requests, r.status, r.allowed), (4, 429, 3));
        assert_eq!(r.allowed_status, Some(Statuses(vec![200])));

        // Defaults and omissions make the request.
        let req = Request::new(&f.defaults, &f.probes[0], "http://gw");
        assert_eq!(req.url, "http://gw/orders");
        assert_eq!(req.headers, vec![("User-Agent", "probe-test")]);
        assert_eq!(req.timeout, Duration::from_millis(2500));
        let req = Request::new(&f.defaults, &f.probes[1], "http://gw");
        assert_eq!(req.method, "OPTIONS");
        assert_eq!(req.headers.len(), 4, "{:?}", req.headers);
        assert_eq!(
            Request::new(&f.defaults, &f.probes[2], "http://gw").timeout,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn unknown_fields_name_the_line_the_probe_and_the_field() {
        let text = "[[probe]]\nname = \"a\"\npath = \"/\"\n\n[[probe]]\nname = \"orders\"\npath = \"/o\"\n[probe.expect]\nstauts = 200\n";
        let e = err(text);
        assert!(e.contains("p.toml"), "{e}");
        assert!(e.contains("line 9"), "{e}");
        assert!(e.contains("probe 2 (\"orders\")"), "{e}");
        assert!(e.contains("stauts"), "{e}");
        let e = err("[defaults]\ntimeout = 3\n[[probe]]\nname = \"a\"\npath = \"/\"\n");
        assert!(e.contains("line 2") && e.contains("`timeout`"), "{e}");
        assert!(!e.contains("in probe"), "{e}");
        let e = err("[[probe]]\nname = \"a\"\npath = \"/\"\nexpect.headers.X = { equals = \"1\", contains = \"2\" }\n");
        assert!(e.contains("exactly one of") && e.contains("probe 1"), "{e}");
        let e =
            err("[[probe]]\nname = \"a\"\npath = \"/\"\nexpect.headers.X = { matches = \"1\" }\n");
        assert!(e.contains("matches"), "{e}");
        let e = err("[[probe]]\nname = \"a\"\npath = \"/\"\n[[probe]]\nname = \"b\"\n");
        assert!(
            e.contains("line 4")
                && e.contains("probe 2 (\"b\")")
                && e.contains("missing field `path`"),
            "{e}"
        );
        let e = err("[[probe]\nname = \"a\"\n");
        assert!(e.contains("line 1"), "{e}");
        let e = err("[[probe]]\nname = \"a\"\npath = \"/\"\nexpect.status = \"200\"\n");
        assert!(e.contains("HTTP status"), "{e}");
    }

    #[test]
    fn impossible_values_name_the_probe_and_the_field() {
        let base = "[[probe]]\nname = \"p\"\npath = \"/x\"\n";
        let cases = [
            (
                "expect.status = 1000\n",
                "expect.status: 1000 is not an HTTP status",
            ),
            ("expect.status = 99\n", "expect.status: 99 is not"),
            ("expect.status = []\n", "expect.status is an empty list"),
            ("method = \"GE T\"\n", "method \"GE T\""),
            ("timeout_secs = 0\n", "timeout_secs is 0"),
            (
                "omit_headers = [\"apikey\"]\n",
                "omit_headers names \"apikey\"",
            ),
            (
                "headers = { \"Bad Name\" = \"v\" }\n",
                "headers: \"Bad Name\"",
            ),
            ("headers = { X = \"a\\nb\" }\n", "control character"),
            ("expect.json = { status = 1 }\n", "not a JSON pointer"),
            ("expect.json = { \"/d\" = 1979-05-27 }\n", "dates"),
            ("expect.body_contains = \"\"\n", "empty text"),
            ("expect.headers = { A = \"1\", a = \"2\" }\n", "twice"),
            (
                "expect.status = 429\nrate_limit = { requests = 3, window_secs = 10 }\n",
                "expect.status cannot be used with rate_limit",
            ),
            (
                "rate_limit = { requests = 0, window_secs = 10 }\n",
                "rate_limit.requests is 0",
            ),
            (
                "rate_limit = { requests = 5000, window_secs = 10 }\n",
                "rate_limit.requests is 5000",
            ),
            (
                "rate_limit = { requests = 3, window_secs = 0 }\n",
                "rate_limit.window_secs is 0",
            ),
            (
                "rate_limit = { requests = 3, window_secs = 9, allowed = 3 }\n",
                "rate_limit.allowed is 3",
            ),
            (
                "rate_limit = { requests = 3, window_secs = 9, allowed_status = [200, 429] }\n",
                "allowed_status contains the limited status 429",
            ),
        ];
        for (extra, want) in cases {
            let e = err(&format!("{base}{extra}"));
            assert!(
                e.contains("probe file p.toml: ")
                    && e.contains("probe 1 (\"p\")")
                    && e.contains(want),
                "{extra:?}: {e}"
            );
        }
        let e = err("[[probe]]\nname = \"p\"\npath = \"x\"\n");
        assert!(e.contains("path \"x\" must start with /"), "{e}");
        let e = err(&format!("{base}{base}"));
        assert!(
            e.contains("probe 2 (\"p\"): name is used by probe 1"),
            "{e}"
        );
        let e = err("[[probe]]\nname = \" \"\npath = \"/\"\n");
        assert!(e.contains("probe 1: name is empty"), "{e}");
        assert!(err("").contains("no probes"));
        let e = err("[defaults]\ntimeout_secs = -1\n[[probe]]\nname = \"a\"\npath = \"/\"\n");
        assert!(e.contains("[defaults] timeout_secs is -1"), "{e}");
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        Answer {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn failed_expectations_say_what_was_expected_and_seen() {
        let e: Expect = toml::from_str(
            r#"
body_contains = ["teapot", "kettle"]
json = { "/status" = "down", "/version" = 3.0, "/missing" = true, "/checks" = { db = "up" } }
[headers]
"Content-Type" = "text/plain"
"Vary" = { contains = "Origin" }
"X-Request-Id" = { present = true }
"Server" = { absent = true }
"#,
        )
        .unwrap();
        let a = answer(
            200,
            &[("Content-Type", "application/json"), ("Server", "nginx")],
            r#"{"status":"ok","version":3,"checks":{"db":"up"},"item":"teapot"}"#,
        );
        let f = check_answer(&e, &a);
        let want = [
            "header Content-Type: expected \"text/plain\", got \"application/json\"",
            "header Server: expected no such header, got \"nginx\"",
            "header Vary: expected a value containing \"Origin\", got no such header",
            "header X-Request-Id: expected the header, got no such header",
            "body: expected it to contain \"kettle\", got \"{\\\"status\\\"",
            "JSON /missing: expected true, got no value there",
            "JSON /status: expected \"down\", got \"ok\"",
        ];
        assert_eq!(f.len(), want.len(), "{f:#?}");
        for (f, w) in f.iter().zip(want) {
            assert!(f.starts_with(w), "{f}\nshould start with\n{w}");
        }
        // A body that is not JSON fails every pointer at once, saying so.
        let f = check_answer(&e, &answer(200, &[], "<html>teapot kettle"));
        assert!(
            f.iter().any(|f| f.starts_with(
                "JSON /checks, /missing, /status, /version: expected a JSON body, got \"<html>"
            )),
            "{f:#?}"
        );
        // Everything met: no failures; header names ignore case, values are trimmed.
        let e: Expect = toml::from_str(
            "json = { \"/a/0\" = 1 }\n[headers]\ncontent-type = \"application/json\"\n",
        )
        .unwrap();
        assert!(check_answer(
            &e,
            &answer(
                200,
                &[("Content-Type", " application/json")],
                "{\"a\":[1.0]}"
            )
        )
        .is_empty());
    }

    #[test]
    fn statuses_and_lists_read_well() {
        assert_eq!(status_failure(None, 204, "status"), None);
        assert_eq!(
            status_failure(None, 401, "status").unwrap(),
            "status: expected a 2xx status, got 401"
        );
        assert_eq!(
            status_failure(Some(&Statuses(vec![200, 204])), 500, "status").unwrap(),
            "status: expected one of 200, 204, got 500"
        );
        assert_eq!(
            status_failure(Some(&Statuses(vec![401])), 401, "status"),
            None
        );
        assert_eq!(status_list(&[200, 200, 429]), "200, 200, 429");
        let mut long = vec![200; 40];
        long.extend([503, 429]);
        assert_eq!(status_list(&long), "200 x 40, 503, 429");
        assert!(json_equal(&serde_json::json!(3), &serde_json::json!(3.0)));
        assert!(!json_equal(&serde_json::json!(3), &serde_json::json!("3")));
        assert_eq!(authority("http://127.0.0.1:9/a?b"), "127.0.0.1:9");
        assert!(check_base_url("http://127.0.0.1:8000").is_ok());
        assert!(check_base_url("https://gw.example.com/prefix").is_ok());
        for bad in ["127.0.0.1:8000", "ftp://x", "http://", "http:///x"] {
            assert!(
                matches!(check_base_url(bad), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
    }

    /// A one-connection HTTP server on loopback answering `reply` to whatever it is sent, and the
    /// request it read.
    fn one_shot(reply: &'static str) -> (String, std::thread::JoinHandle<String>) {
        one_shot_after(Duration::ZERO, reply)
    }

    /// [`one_shot`] answering only after `delay`.
    fn one_shot_after(
        delay: Duration,
        reply: &'static str,
    ) -> (String, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = l.accept().unwrap();
            let mut req = vec![];
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            std::thread::sleep(delay);
            s.write_all(reply.as_bytes()).unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        (url, h)
    }

    fn file(text: &str) -> ProbeFile {
        parse(text, "test").unwrap()
    }

    #[test]
    fn redirects_and_errors_are_answers_to_check() {
        let (url, h) = one_shot(
            "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let f = file(
            "[defaults]\nheaders = { apikey = \"k\" }\n[[probe]]\nname = \"old path moved\"\nmethod = \"DELETE\"\npath = \"/old?x=1\"\nexpect.status = 302\nexpect.headers.Location = \"/elsewhere\"\n",
        );
        let r = run(&f, &format!("{url}/"));
        let req = h.join().unwrap();
        assert!(req.starts_with("DELETE /old?x=1 HTTP/1.1\r\n"), "{req}");
        assert!(
            req.to_ascii_lowercase().contains("\r\napikey: k\r\n"),
            "{req}"
        );
        assert_eq!(r.results.len(), 1);
        let p = &r.results[0];
        assert!(p.passed, "{p:?}");
        assert_eq!((p.requests, p.status), (1, Some(302)));
        assert_eq!(p.detail, "DELETE /old?x=1 -> 302");

        let (url, h) = one_shot(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown",
        );
        let r = run(&file("[[probe]]\nname = \"up\"\npath = \"/\"\n"), &url);
        h.join().unwrap();
        assert!(!r.passed() && r.failures() == 1);
        assert_eq!(
            r.results[0].detail,
            "GET / -> 503: status: expected a 2xx status, got 503"
        );
    }

    #[test]
    fn no_listener_is_a_failed_probe_saying_so() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let f = file("[[probe]]\nname = \"a\"\npath = \"/\"\n[[probe]]\nname = \"b\"\npath = \"/\"\nrate_limit = { requests = 3, window_secs = 5 }\n");
        let r = run(&f, &format!("http://127.0.0.1:{port}"));
        assert_eq!(r.failures(), 2);
        for p in &r.results {
            assert!(
                p.detail.contains(&format!(
                    "cannot connect to 127.0.0.1:{port}: is the gateway listening?"
                )),
                "{p:?}"
            );
            assert_eq!((p.requests, p.status), (1, None));
        }
        assert!(
            r.results[1].detail.contains("request 1"),
            "{:?}",
            r.results[1]
        );
        let r = run(&f, "not a url");
        assert!(r.results[0].detail.contains("not a valid http"), "{r:?}");
    }

    #[test]
    fn a_rate_limit_probe_stops_when_its_window_has_passed() {
        // The answer takes at least 20 ms, so a 1 ms window has passed before a second request.
        let (url, h) = one_shot_after(
            Duration::from_millis(20),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        );
        let f = file("[[probe]]\nname = \"limited\"\npath = \"/q\"\nrate_limit = { requests = 3, window_secs = 0.001 }\n");
        let r = run(&f, &url);
        h.join().unwrap();
        let p = &r.results[0];
        assert!(!p.passed);
        assert_eq!((p.requests, p.status), (1, Some(200)));
        assert!(
            p.detail.starts_with(
                "GET /q: expected 429 within the 0.001 s window, but 1 request(s) took "
            ) && p.detail.contains("without it (got 200)"),
            "{p:?}"
        );
    }
}
