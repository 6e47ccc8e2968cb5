//! S3 Object Lock: the requests `object_store` does not make.
//!
//! `object_store` writes, reads, lists and deletes objects, but it cannot put a retention on an
//! object nor address object versions. A bucket with Object Lock is always versioned, and there a
//! plain DELETE only adds a delete marker: the data stays (and stays billed). This module signs and
//! sends the few raw requests the S3 backend needs on such a bucket:
//! - `GET ?object-lock` and `GET ?versioning` on the bucket, once at open;
//! - `PUT <key>?retention` (mode and retain-until date) right after an object is written;
//! - `HEAD <key>?versionId=` for a version's retention (S3 returns it in the
//!   `x-amz-object-lock-*` headers to a caller allowed `s3:GetObjectRetention`);
//! - `GET ?versions&prefix=<key>` (paged) and `DELETE <key>?versionId=` to remove every version of a
//!   key, which is the only physical removal on a versioned bucket.
//!
//! A DELETE refused because a version is retained becomes [`Error::Retained`] with the date, so that
//! prune and erase can report what stays and until when. Requests are signed with `object_store`'s own
//! SigV4 signer and credential chain, and sent with reqwest; transient failures (5xx, 429, timeouts,
//! resets) are retried with exponential backoff and jitter, permanent ones fail at once.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::aws::{AwsAuthorizer, AwsCredential, AwsCredentialProvider};
use object_store::client::HttpRequest;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};

use crate::backend::FileType;
use crate::error::{Error, Result};

/// The two retention modes of S3 Object Lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetentionMode {
    /// Users with `s3:BypassGovernanceRetention` may still delete or shorten the retention.
    Governance,
    /// Nobody, not even the account root, can delete a version or shorten its retention.
    Compliance,
}

impl RetentionMode {
    /// The name S3 uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionMode::Governance => "GOVERNANCE",
            RetentionMode::Compliance => "COMPLIANCE",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "GOVERNANCE" => Some(RetentionMode::Governance),
            "COMPLIANCE" => Some(RetentionMode::Compliance),
            _ => None,
        }
    }
}

impl fmt::Display for RetentionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str().to_ascii_lowercase())
    }
}

/// The retention the backend puts on packs, index files and snapshots: the backend option
/// `s3.object-lock=MODE:DAYSd` (`governance:30d`, `compliance:365d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockPolicy {
    /// Governance or compliance.
    pub mode: RetentionMode,
    /// Days from the write.
    pub days: u32,
}

/// The longest retention accepted (S3 allows 100 years; a typo like `3650000d` should not lock a
/// bucket for ever).
pub const MAX_LOCK_DAYS: u32 = 36_500;

impl std::str::FromStr for LockPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "backend option s3.object-lock={s:?}: {why}; use MODE:DAYSd with MODE governance or \
                 compliance, e.g. s3.object-lock=governance:30d"
            ))
        };
        let (mode, days) = s
            .split_once(':')
            .ok_or_else(|| bad("mode and days are separated by ':'"))?;
        let mode = RetentionMode::parse(mode).ok_or_else(|| bad("unknown mode"))?;
        let days = days.trim();
        let days: u32 = days
            .strip_suffix('d')
            .unwrap_or(days)
            .parse()
            .map_err(|_| bad("days is not a whole number"))?;
        if days == 0 || days > MAX_LOCK_DAYS {
            return Err(bad(&format!("days must be 1 to {MAX_LOCK_DAYS}")));
        }
        Ok(Self { mode, days })
    }
}

impl fmt::Display for LockPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}d", self.mode, self.days)
    }
}

/// A bucket's Object Lock configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketLock {
    /// Object Lock is enabled (it can only be enabled when the bucket is created, or later by AWS
    /// support; it is never disabled again).
    pub enabled: bool,
    /// The bucket's default retention, if it has one (applied by S3 to every new object).
    pub default_retention: Option<(RetentionMode, u32)>,
}

/// One version of a key (or a delete marker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The version id (`null` for an object written while versioning was off).
    pub version_id: String,
    /// A delete marker rather than data.
    pub delete_marker: bool,
}

/// Signs and sends the Object Lock requests of one bucket.
pub struct LockClient {
    bucket: String,
    base: String,
    region: String,
    credentials: AwsCredentialProvider,
    http: reqwest::Client,
    /// Attempts per request (transient failures are retried).
    attempts: u32,
}

impl fmt::Debug for LockClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockClient")
            .field("bucket", &self.base)
            .finish()
    }
}

/// Installs ring as rustls' process-wide crypto provider (reqwest is built without one); a provider
/// already installed by someone else is fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Percent-encodes a key or query value for S3: everything but unreserved characters (and `/` in
/// keys).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of the first `<name>...</name>` element in `xml`.
fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    blocks(xml, name).into_iter().next()
}

/// The texts of every `<name>...</name>` element in `xml` (S3 responses are flat enough for this).
fn blocks<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Parses a retain-until date as S3 gives it (`2030-01-01T00:00:00.000Z` or without the fraction).
pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// The answer to one request.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    /// The S3 error code (`AccessDenied`, `NoSuchKey`), if the body holds one.
    fn code(&self) -> &str {
        tag(&self.body, "Code").unwrap_or("")
    }

    fn describe(&self) -> String {
        let msg = tag(&self.body, "Message").unwrap_or("");
        format!("HTTP {} {} {}", self.status.as_u16(), self.code(), msg)
            .trim()
            .to_string()
    }
}

impl LockClient {
    /// A client for bucket `bucket` at `bucket_url` (path style `http://host:port/bucket` or virtual
    /// hosted `https://bucket.s3.REGION.amazonaws.com`), signing for `region` with `credentials` (the
    /// provider the object store uses, so that the usual AWS chain and environment variables apply).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the HTTP client cannot be built.
    pub fn new(
        bucket: &str,
        bucket_url: &str,
        region: &str,
        credentials: AwsCredentialProvider,
    ) -> Result<Self> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::InvalidInput(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            bucket: bucket.to_string(),
            base: bucket_url.trim_end_matches('/').to_string(),
            region: region.to_string(),
            credentials,
            http,
            attempts: 6,
        })
    }

    /// The bucket, for messages.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn failure(&self, what: &str, detail: String, permanent: bool) -> Error {
        let kind = if permanent {
            std::io::ErrorKind::PermissionDenied
        } else {
            std::io::ErrorKind::Other
        };
        Error::io(
            format!("S3 bucket {}: {what}", self.bucket),
            std::io::Error::new(kind, detail),
        )
    }

    /// Signs and sends one request, retrying transient failures; any HTTP status is returned.
    async fn send(
        &self,
        method: Method,
        key: &str,
        query: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
        what: &str,
    ) -> Result<Answer> {
        let url = if key.is_empty() && query.is_empty() {
            self.base.clone()
        } else if key.is_empty() {
            format!("{}/?{query}", self.base)
        } else if query.is_empty() {
            format!("{}/{}", self.base, encode(key, true))
        } else {
            format!("{}/{}?{query}", self.base, encode(key, true))
        };
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                // Exponential backoff with full jitter: 100 ms, 200 ms, ... up to 5 s.
                let cap = (100u64 << attempt.min(6)).min(5_000);
                let ms = rand::random::<u64>() % cap + cap / 4;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let cred: Arc<AwsCredential> = self
                .credentials
                .get_credential()
                .await
                .map_err(|e| self.failure(what, format!("no AWS credentials: {e}"), true))?;
            let mut req = HttpRequest::new(body.clone().into());
            *req.method_mut() = method.clone();
            *req.uri_mut() = url
                .parse()
                .map_err(|e| Error::InvalidInput(format!("S3 URL {url:?}: {e}")))?;
            for (k, v) in headers {
                let v = HeaderValue::from_str(v)
                    .map_err(|e| Error::InvalidInput(format!("S3 header {k}: {e}")))?;
                req.headers_mut().insert(*k, v);
            }
            AwsAuthorizer::new(&cred, "s3", &self.region)
                .try_authorize(&mut req, None)
                .map_err(|e| self.failure(what, format!("cannot sign the request: {e}"), true))?;
            let mut rb = self.http.request(method.clone(), url.as_str());
            for (k, v) in req.headers() {
                rb = rb.header(k, v);
            }
            let sent = rb.body(body.clone()).send().await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{e}");
                    continue;
                }
            };
            let status = resp.status();
            let hdrs = resp.headers().clone();
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) => {
                    // A reset or truncated body: the request may be repeated (all of these are
                    // idempotent).
                    last = format!("reading the answer: {e}");
                    continue;
                }
            };
            let answer = Answer {
                status,
                headers: hdrs,
                body: text,
            };
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                last = answer.describe();
                continue;
            }
            return Ok(answer);
        }
        Err(self.failure(
            what,
            format!(
                "{last} (gave up after {} attempts; the store may be down or overloaded: try again later)",
                self.attempts
            ),
            false,
        ))
    }

    fn unexpected(&self, what: &str, a: &Answer) -> Error {
        let permanent = a.status.is_client_error();
        let hint = match a.status.as_u16() {
            403 => {
                ": the storage credential lacks a permission this needs (see docs/object-lock.md)"
            }
            _ => "",
        };
        self.failure(what, format!("{}{hint}", a.describe()), permanent)
    }

    /// Creates the bucket, with Object Lock enabled when asked (`PUT` with
    /// `x-amz-bucket-object-lock-enabled: true`; such a bucket is versioned). Tests and the
    /// documentation's setup use it; gatevault never creates buckets on its own.
    ///
    /// # Errors
    /// Errors of the store (a bucket that exists already among them).
    pub async fn create_bucket(&self, object_lock: bool) -> Result<()> {
        let what = "creating it";
        let body = if self.region == "us-east-1" {
            Vec::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            )
            .into_bytes()
        };
        let headers: Vec<(&'static str, String)> = if object_lock {
            vec![("x-amz-bucket-object-lock-enabled", "true".to_string())]
        } else {
            vec![]
        };
        let a = self.send(Method::PUT, "", "", &headers, body, what).await?;
        if !a.status.is_success() {
            return Err(self.unexpected(what, &a));
        }
        Ok(())
    }

    /// The bucket's Object Lock configuration (`GET ?object-lock`).
    ///
    /// # Errors
    /// Errors of the store; a bucket without Object Lock is `enabled: false`, not an error.
    pub async fn bucket_lock(&self) -> Result<BucketLock> {
        let what = "reading its Object Lock configuration";
        let a = self
            .send(Method::GET, "", "object-lock", &[], vec![], what)
            .await?;
        if a.status == StatusCode::NOT_FOUND && a.code() != "NoSuchBucket" {
            return Ok(BucketLock {
                enabled: false,
                default_retention: None,
            });
        }
        if !a.status.is_success() {
            return Err(self.unexpected(what, &a));
        }
        let enabled = tag(&a.body, "ObjectLockEnabled").is_some_and(|s| s.trim() == "Enabled");
        let default_retention = tag(&a.body, "DefaultRetention").and_then(|d| {
            let mode = RetentionMode::parse(tag(d, "Mode")?)?;
            let days = match (tag(d, "Days"), tag(d, "Years")) {
                (Some(n), _) => n.trim().parse().ok()?,
                (None, Some(y)) => y.trim().parse::<u32>().ok()?.saturating_mul(365),
                _ => return None,
            };
            Some((mode, days))
        });
        Ok(BucketLock {
            enabled,
            default_retention,
        })
    }

    /// Whether the bucket keeps versions (`GET ?versioning`: enabled, or suspended with versions
    /// possibly left).
    ///
    /// # Errors
    /// Errors of the store.
    pub async fn versioned(&self) -> Result<bool> {
        let what = "reading its versioning state";
        let a = self
            .send(Method::GET, "", "versioning", &[], vec![], what)
            .await?;
        if !a.status.is_success() {
            return Err(self.unexpected(what, &a));
        }
        Ok(matches!(
            tag(&a.body, "Status").map(str::trim),
            Some("Enabled" | "Suspended")
        ))
    }

    /// Puts a retention on the current version of `key` (`PUT ?retention`, with the Content-MD5 S3
    /// requires there).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the key does not exist; errors of the store (a bucket without Object
    /// Lock answers 400 InvalidRequest).
    pub async fn put_retention(
        &self,
        key: &str,
        mode: RetentionMode,
        until: DateTime<Utc>,
    ) -> Result<()> {
        use base64::Engine;
        use md5::Digest;
        let what = format!("setting the retention of {key}");
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode.as_str(),
            until.format("%Y-%m-%dT%H:%M:%SZ")
        )
        .into_bytes();
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let a = self
            .send(
                Method::PUT,
                key,
                "retention",
                &[
                    ("content-md5", md5),
                    ("content-type", "application/xml".to_string()),
                ],
                body,
                &what,
            )
            .await?;
        match a.status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND if a.code() == "NoSuchKey" => Err(Error::NotFound {
                kind: "object".into(),
                id: key.to_string(),
            }),
            _ => Err(self.unexpected(&what, &a)),
        }
    }

    /// The retention of one version of `key` (`HEAD ?versionId=`): its mode and retain-until date,
    /// `None` when it has none. A legal hold counts as retained for ever.
    ///
    /// # Errors
    /// [`Error::NotFound`]; errors of the store.
    pub async fn retention(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<(RetentionMode, DateTime<Utc>)>> {
        let what = format!("reading the retention of {key}");
        let query = version
            .map(|v| format!("versionId={}", encode(v, false)))
            .unwrap_or_default();
        let a = self
            .send(Method::HEAD, key, &query, &[], vec![], &what)
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound {
                kind: "object".into(),
                id: key.to_string(),
            });
        }
        if !a.status.is_success() {
            return Err(self.unexpected(&what, &a));
        }
        let h = |n: &str| a.headers.get(n).and_then(|v| v.to_str().ok());
        if h("x-amz-object-lock-legal-hold").is_some_and(|v| v.eq_ignore_ascii_case("ON")) {
            return Ok(Some((RetentionMode::Compliance, DateTime::<Utc>::MAX_UTC)));
        }
        let mode = h("x-amz-object-lock-mode").and_then(RetentionMode::parse);
        let until = h("x-amz-object-lock-retain-until-date").and_then(parse_date);
        Ok(mode.zip(until))
    }

    /// Every version and delete marker of exactly `key` (`GET ?versions&prefix=`, following pages).
    ///
    /// # Errors
    /// Errors of the store.
    pub async fn versions(&self, key: &str) -> Result<Vec<ObjectVersion>> {
        let what = format!("listing the versions of {key}");
        let mut out = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut query = format!("prefix={}&versions", encode(key, false));
            if let Some((k, v)) = &marker {
                query.push_str(&format!(
                    "&key-marker={}&version-id-marker={}",
                    encode(k, false),
                    encode(v, false)
                ));
            }
            let a = self
                .send(Method::GET, "", &query, &[], vec![], &what)
                .await?;
            if !a.status.is_success() {
                return Err(self.unexpected(&what, &a));
            }
            for (block, delete_marker) in blocks(&a.body, "Version")
                .into_iter()
                .map(|b| (b, false))
                .chain(
                    blocks(&a.body, "DeleteMarker")
                        .into_iter()
                        .map(|b| (b, true)),
                )
            {
                if tag(block, "Key").map(unescape).as_deref() != Some(key) {
                    continue;
                }
                if let Some(v) = tag(block, "VersionId") {
                    out.push(ObjectVersion {
                        version_id: unescape(v),
                        delete_marker,
                    });
                }
            }
            let truncated = tag(&a.body, "IsTruncated").is_some_and(|t| t.trim() == "true");
            match (
                truncated,
                tag(&a.body, "NextKeyMarker"),
                tag(&a.body, "NextVersionIdMarker"),
            ) {
                (true, Some(k), Some(v)) if Some((unescape(k), unescape(v))) != marker => {
                    marker = Some((unescape(k), unescape(v)));
                }
                _ => return Ok(out),
            }
        }
    }

    /// Hides `key` behind a delete marker (a plain DELETE on a versioned bucket): its versions stay.
    ///
    /// # Errors
    /// Errors of the store.
    pub async fn hide(&self, key: &str) -> Result<()> {
        let what = format!("deleting {key}");
        let a = self
            .send(Method::DELETE, key, "", &[], vec![], &what)
            .await?;
        if a.status.is_success() || a.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(self.unexpected(&what, &a))
    }

    /// Deletes one version of `key` (`DELETE ?versionId=`); one already gone is fine.
    ///
    /// # Errors
    /// [`Error::Retained`] when Object Lock refuses (with the version's retain-until date); errors of
    /// the store.
    pub async fn delete_version(&self, key: &str, version: &str) -> Result<()> {
        let what = format!("deleting version {version} of {key}");
        let a = self
            .send(
                Method::DELETE,
                key,
                &format!("versionId={}", encode(version, false)),
                &[],
                vec![],
                &what,
            )
            .await?;
        if a.status.is_success() || a.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        if a.status == StatusCode::FORBIDDEN && a.code() == "AccessDenied" {
            // Object Lock answers a plain AccessDenied: find out whether the retention is why.
            if let Ok(Some((_, until))) = self.retention(key, Some(version)).await {
                if until > Utc::now() {
                    return Err(Error::Retained {
                        object: key.to_string(),
                        until,
                    });
                }
            }
        }
        Err(self.unexpected(&what, &a))
    }

    /// The latest retain-until date among the versions of `key` that is still in the future: the
    /// key cannot be physically removed before it. `None` when nothing retains it.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the key has no version holding data; errors of the store.
    pub async fn locked_until(&self, key: &str) -> Result<Option<DateTime<Utc>>> {
        let versions = self.versions(key).await?;
        let data: Vec<&ObjectVersion> = versions.iter().filter(|v| !v.delete_marker).collect();
        if data.is_empty() {
            return Err(Error::NotFound {
                kind: "object".into(),
                id: key.to_string(),
            });
        }
        let now = Utc::now();
        let mut latest: Option<DateTime<Utc>> = None;
        for v in data {
            match self.retention(key, Some(&v.version_id)).await {
                Ok(Some((_, until))) if until > now => {
                    latest = latest.max(Some(until));
                }
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(latest)
    }

    /// Removes `key` physically: every version and delete marker. When a version is retained, nothing
    /// is deleted and the answer is [`Error::Retained`] with the latest retain-until date.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the key has no version at all; [`Error::Retained`]; errors of the
    /// store.
    pub async fn remove_all_versions(&self, key: &str) -> Result<()> {
        let versions = self.versions(key).await?;
        if versions.is_empty() {
            return Err(Error::NotFound {
                kind: "object".into(),
                id: key.to_string(),
            });
        }
        let now = Utc::now();
        let mut latest: Option<DateTime<Utc>> = None;
        for v in versions.iter().filter(|v| !v.delete_marker) {
            match self.retention(key, Some(&v.version_id)).await {
                Ok(Some((_, until))) if until > now => latest = latest.max(Some(until)),
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(until) = latest {
            return Err(Error::Retained {
                object: key.to_string(),
                until,
            });
        }
        // Data versions first: if this is interrupted, what is left is either more data versions
        // (removed by the next attempt) or only delete markers (the key already reads as gone).
        let mut ordered: Vec<&ObjectVersion> = versions.iter().collect();
        ordered.sort_by_key(|v| v.delete_marker);
        for v in ordered {
            self.delete_version(key, &v.version_id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_policy_parses_and_refuses_nonsense() {
        let p: LockPolicy = "governance:30d".parse().unwrap();
        assert_eq!(
            p,
            LockPolicy {
                mode: RetentionMode::Governance,
                days: 30
            }
        );
        assert_eq!(p.to_string(), "governance:30d");
        let p: LockPolicy = "COMPLIANCE:365".parse().unwrap();
        assert_eq!(p.mode, RetentionMode::Compliance);
        assert_eq!(p.days, 365);
        for bad in [
            "governance",
            "legal:30d",
            "governance:0d",
            "governance:-1d",
            "compliance:99999d",
            "governance:30w",
            "",
        ] {
            let e = bad.parse::<LockPolicy>().unwrap_err().to_string();
            assert!(e.contains("s3.object-lock"), "{bad}: {e}");
        }
    }

    #[test]
    fn xml_elements_and_dates_are_read() {
        let xml = "<ListVersionsResult><IsTruncated>true</IsTruncated>\
            <Version><Key>a&amp;b</Key><VersionId>v1</VersionId></Version>\
            <DeleteMarker><Key>a&amp;b</Key><VersionId>v2</VersionId></DeleteMarker>\
            <Version><Key>c</Key><VersionId>v3</VersionId></Version></ListVersionsResult>";
        assert_eq!(blocks(xml, "Version").len(), 2);
        assert_eq!(tag(xml, "IsTruncated"), Some("true"));
        assert_eq!(unescape(tag(xml, "Key").unwrap()), "a&b");
        assert_eq!(tag(xml, "Missing"), None);
        let d = parse_date("2030-01-02T03:04:05.000Z").unwrap();
        assert_eq!(d.to_rfc3339(), "2030-01-02T03:04:05+00:00");
        assert!(parse_date("2030-01-02T03:04:05Z").is_some());
        assert!(parse_date("tomorrow").is_none());
    }

    #[test]
    fn keys_are_encoded_for_the_path_and_query() {
        assert_eq!(encode("p/data/ab/ab01", true), "p/data/ab/ab01");
        assert_eq!(encode("a b/c", false), "a%20b%2Fc");
    }
}

/// A backend that simulates object lock over memory, for the tests of prune and erase: objects given
/// a lock cannot be removed before its date, and [`Backend::locked_until`] answers like an S3 bucket
/// with Object Lock.
#[cfg(test)]
pub(crate) mod simulated {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use chrono::{DateTime, Utc};

    use crate::backend::memory::MemoryBackend;
    use crate::backend::{Backend, Capabilities, FileType};
    use crate::error::{Error, Result};

    #[derive(Debug, Default)]
    pub(crate) struct Retaining {
        inner: MemoryBackend,
        locks: Mutex<HashMap<(FileType, String), DateTime<Utc>>>,
        /// Objects removed while retained: hidden behind a delete marker, their version kept.
        hidden: Mutex<std::collections::HashSet<(FileType, String)>>,
    }

    impl Retaining {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        /// Locks every object of type `t` there now until `until`.
        pub(crate) fn lock_all(&self, t: FileType, until: DateTime<Utc>) -> Vec<String> {
            let names: Vec<String> = self
                .inner
                .list(t)
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            let mut l = self.locks.lock().unwrap();
            for n in &names {
                l.insert((t, n.clone()), until);
            }
            names
        }

        /// Lets every lock expire.
        pub(crate) fn expire_all(&self) {
            self.locks.lock().unwrap().clear();
        }

        /// Objects hidden behind a delete marker whose retained version is still stored.
        pub(crate) fn hidden(&self) -> usize {
            self.hidden.lock().unwrap().len()
        }

        fn lock_of(&self, t: FileType, name: &str) -> Option<DateTime<Utc>> {
            let l = self.locks.lock().unwrap();
            l.get(&(t, name.to_string()))
                .copied()
                .filter(|u| *u > Utc::now())
        }
    }

    impl Backend for Retaining {
        fn location(&self) -> String {
            "memory with object lock".into()
        }
        fn create(&self) -> Result<()> {
            self.inner.create()
        }
        fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
            self.inner.list(t)
        }
        fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
            self.inner.read(t, name)
        }
        fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
            self.inner.read_range(t, name, offset, len)
        }
        fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
            self.inner.write(t, name, data)
        }
        fn remove(&self, t: FileType, name: &str) -> Result<()> {
            // As the S3 backend does: a retained pack or index file stays; any other retained
            // object is hidden (its version stays); a hidden one is removed once its lock ended.
            let key = (t, name.to_string());
            let hidden = self.hidden.lock().unwrap().contains(&key);
            match self.lock_of(t, name) {
                Some(until) if matches!(t, FileType::Pack | FileType::Index) => {
                    Err(Error::Retained {
                        object: t.path_of(name),
                        until,
                    })
                }
                Some(_) if hidden => Ok(()),
                Some(_) => {
                    self.inner.remove(t, name)?;
                    self.hidden.lock().unwrap().insert(key);
                    Ok(())
                }
                None if hidden => {
                    self.hidden.lock().unwrap().remove(&key);
                    Ok(())
                }
                None => self.inner.remove(t, name),
            }
        }
        fn stat(&self, t: FileType, name: &str) -> Result<u64> {
            self.inner.stat(t, name)
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                object_lock: true,
                ..self.inner.capabilities()
            }
        }
        fn locked_until(&self, t: FileType, name: &str) -> Result<Option<DateTime<Utc>>> {
            if !self.hidden.lock().unwrap().contains(&(t, name.to_string())) {
                self.inner.stat(t, name)?;
            }
            Ok(self.lock_of(t, name))
        }
    }
}

/// What the S3 backend keeps about Object Lock on its bucket: the client for the raw requests, the
/// retention to put on new packs, index files and snapshots (`s3.object-lock`), and the bucket's
/// state, read once.
pub(crate) struct S3ObjectLock {
    client: Arc<LockClient>,
    policy: Option<LockPolicy>,
    state: std::sync::OnceLock<(bool, bool)>,
    location: String,
}

impl fmt::Debug for S3ObjectLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ObjectLock")
            .field("policy", &self.policy)
            .finish()
    }
}

/// The objects that get a retention: those whose loss loses backups. Locks must stay removable (a
/// retained lock would block the repository until its date); keys, the config, records and audit
/// entries are replaced or removed by key management, erase and rotation, which a retention would
/// block for its whole length.
pub fn retained_type(t: FileType) -> bool {
    matches!(t, FileType::Pack | FileType::Index | FileType::Snapshot)
}

impl S3ObjectLock {
    /// Sets up Object Lock handling for a bucket; with `option` (`s3.object-lock=MODE:DAYSd`) the
    /// bucket must have Object Lock enabled, which is checked now, before anything is written.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad option or a bucket without Object Lock; errors of the store.
    pub(crate) fn open(
        bucket: &str,
        bucket_url: &str,
        region: &str,
        credentials: AwsCredentialProvider,
        option: Option<&str>,
        location: &str,
    ) -> Result<Self> {
        let policy = option.map(str::parse::<LockPolicy>).transpose()?;
        let s = Self {
            client: Arc::new(LockClient::new(bucket, bucket_url, region, credentials)?),
            policy,
            state: std::sync::OnceLock::new(),
            location: location.to_string(),
        };
        if let Some(p) = policy {
            let (enabled, _) = s.state()?;
            if !enabled {
                return Err(Error::InvalidInput(format!(
                    "{location}: -o s3.object-lock={p} needs a bucket with Object Lock enabled, and \
                     bucket {bucket:?} has none (Object Lock can only be chosen when a bucket is \
                     created: `aws s3api create-bucket --bucket NAME --object-lock-enabled-for-bucket`; \
                     see docs/object-lock.md); nothing was written"
                )));
            }
        }
        Ok(s)
    }

    /// (Object Lock enabled, versioned), asked once.
    fn state(&self) -> Result<(bool, bool)> {
        if let Some(s) = self.state.get() {
            return Ok(*s);
        }
        let c = Arc::clone(&self.client);
        let s = super::object::run_io(async move {
            let lock = c.bucket_lock().await?;
            let versioned = lock.enabled || c.versioned().await?;
            Ok((lock.enabled, versioned))
        })?;
        Ok(*self.state.get_or_init(|| s))
    }

    /// Whether objects may be retained or kept as versions: callers must ask before removing. When
    /// the bucket cannot be asked, the answer is yes (asking each object will report the error).
    pub(crate) fn active(&self) -> bool {
        self.state().map(|(e, v)| e || v).unwrap_or(true)
    }

    /// Puts the retention on object `key` of type `t` just written, when `s3.object-lock` asks for it.
    ///
    /// # Errors
    /// Errors of the store: the write fails, since the object would be unprotected.
    pub(crate) fn after_write(&self, t: FileType, name: &str, key: String) -> Result<()> {
        let Some(p) = self.policy.filter(|_| retained_type(t)) else {
            return Ok(());
        };
        let c = Arc::clone(&self.client);
        let until = Utc::now() + chrono::Duration::days(i64::from(p.days));
        super::object::run_io(async move { c.put_retention(&key, p.mode, until).await }).map_err(
            |e| match e {
                Error::NotFound { .. } => super::not_found(t, name),
                e => Error::io(
                    format!(
                        "{}: {t} {name} was written but could not be locked",
                        self.location
                    ),
                    std::io::Error::other(e.to_string()),
                ),
            },
        )
    }

    /// The end of the retention of object `name` (at `key`), if one holds it now.
    ///
    /// # Errors
    /// [`Error::NotFound`]; errors of the store.
    pub(crate) fn locked_until(
        &self,
        t: FileType,
        name: &str,
        key: String,
    ) -> Result<Option<DateTime<Utc>>> {
        if !self.state()?.1 {
            return Ok(None);
        }
        let c = Arc::clone(&self.client);
        super::object::run_io(async move { c.locked_until(&key).await }).map_err(|e| match e {
            Error::NotFound { .. } => super::not_found(t, name),
            e => e,
        })
    }

    /// Removes object `name` (at `key`) on a versioned bucket: every version, so that the data is
    /// physically gone. A retained pack or index file is left untouched ([`Error::Retained`]);
    /// any other retained object is hidden behind a delete marker (its retained version stays until
    /// its date: a lifecycle rule for noncurrent versions removes it then). `None` on a bucket
    /// without versions, where a plain DELETE is the removal.
    pub(crate) fn remove(&self, t: FileType, name: &str, key: String) -> Option<Result<()>> {
        match self.state() {
            Ok((_, false)) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(e)),
        }
        let c = Arc::clone(&self.client);
        let object = format!("{t} {name}");
        Some(
            super::object::run_io(async move {
                match c.remove_all_versions(&key).await {
                    Err(Error::Retained { until, .. })
                        if !matches!(t, FileType::Pack | FileType::Index) =>
                    {
                        tracing::info!(
                            "{object} is retained until {until}: hidden behind a delete marker"
                        );
                        c.hide(&key).await
                    }
                    Err(Error::Retained { until, .. }) => Err(Error::Retained { object, until }),
                    r => r,
                }
            })
            .map_err(|e| match e {
                Error::NotFound { .. } => super::not_found(t, name),
                e => e,
            }),
        )
    }
}
