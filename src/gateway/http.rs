//! A small blocking HTTP client for gateway admin APIs: JSON GETs and writes with retries where they
//! make sense (429 with `Retry-After`, 5xx, resets and timeouts; for writes only idempotent ones) and
//! clear errors where they do not.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// Attempts per request (the first try and the retries).
const ATTEMPTS: u32 = 4;

/// Longest `Retry-After` honoured; a longer one fails the capture with the wait in the message.
const MAX_RETRY_AFTER: u64 = 60;

/// Largest response body read.
const MAX_BODY: u64 = 512 << 20;

/// A client for one gateway's admin API.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    headers: Vec<(String, String)>,
    gateway: String,
    auth_hint: String,
}

/// The answer to a write request ([`Client::send`]).
#[derive(Debug)]
pub enum Answer {
    /// 2xx, with its body.
    Done(Vec<u8>),
    /// Any other status (after retries where they apply), with the body's `message` or its start.
    /// The message is the gateway's: it may quote the request's values, secrets included.
    Refused {
        /// The HTTP status.
        status: u16,
        /// What the gateway said.
        message: String,
    },
}

/// A response that was not a success, for callers that handle some statuses themselves.
pub enum Reply {
    /// 2xx with its body and headers of interest.
    Ok {
        /// The body.
        body: Vec<u8>,
        /// The `ETag` header, if any.
        etag: Option<String>,
        /// The `Server` header, if any.
        server: Option<String>,
    },
    /// 404.
    NotFound,
}

impl Client {
    /// A client for `base` (scheme, host, port and path prefix), describing the gateway as `gateway`
    /// in errors; `auth_hint` tells the user how to supply credentials after a 401 or 403.
    pub fn new(
        base: &str,
        gateway: String,
        headers: Vec<(String, String)>,
        auth_hint: &str,
    ) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(60))
            .build();
        Self {
            agent,
            base: base.trim_end_matches('/').to_string(),
            headers,
            gateway,
            auth_hint: auth_hint.to_string(),
        }
    }

    /// The full URL of `path` (absolute URLs are taken as they are).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    fn fail(&self, reason: String) -> Error {
        Error::gateway(self.gateway.clone(), reason)
    }

    /// GETs `path`, retrying transient failures.
    ///
    /// # Errors
    /// [`Error::Gateway`] for an unreachable endpoint, refused credentials, other statuses, or a
    /// transient failure that outlasted the retries.
    pub fn get(&self, path: &str) -> Result<Reply> {
        let url = self.url(path);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(backoff(attempt));
            }
            let mut req = self.agent.get(&url);
            for (k, v) in &self.headers {
                req = req.set(k, v);
            }
            match req.call() {
                Ok(resp) => {
                    let etag = resp.header("ETag").map(str::to_string);
                    let server = resp.header("Server").map(str::to_string);
                    let mut body = Vec::new();
                    match resp.into_reader().take(MAX_BODY).read_to_end(&mut body) {
                        Ok(_) => return Ok(Reply::Ok { body, etag, server }),
                        // A body cut off half way is transient.
                        Err(e) => last = format!("reading the response from {url}: {e}"),
                    }
                }
                Err(ureq::Error::Status(404, _)) => return Ok(Reply::NotFound),
                Err(ureq::Error::Status(code @ (401 | 403), _)) => {
                    return Err(self.fail(format!(
                        "HTTP {code} from {url}: the admin API refused the request; {}",
                        self.auth_hint
                    )))
                }
                Err(ureq::Error::Status(429, resp)) => {
                    let wait = retry_after(&resp);
                    if wait > MAX_RETRY_AFTER {
                        return Err(self.fail(format!(
                            "HTTP 429 from {url}: rate limited, and the gateway asks to wait {wait} s; try again later"
                        )));
                    }
                    tracing::info!("{url}: rate limited, waiting {wait} s as Retry-After asks");
                    std::thread::sleep(Duration::from_secs(wait));
                    last = format!("HTTP 429 from {url} (rate limited) after {ATTEMPTS} attempts");
                }
                Err(ureq::Error::Status(code, resp)) if code >= 500 => {
                    last = format!("HTTP {code} from {url}: {}", message(resp));
                }
                Err(ureq::Error::Status(code, resp)) => {
                    return Err(self.fail(format!("HTTP {code} from {url}: {}", message(resp))))
                }
                Err(ureq::Error::Transport(t)) => {
                    last = format!("cannot reach {url}: {t}");
                    // A bad URL never heals; a refused connection is retried once (a restarting gateway).
                    if t.kind() == ureq::ErrorKind::InvalidUrl
                        || (t.kind() == ureq::ErrorKind::ConnectionFailed && attempt >= 1)
                    {
                        break;
                    }
                }
            }
            tracing::debug!("{last}; attempt {} of {ATTEMPTS}", attempt + 1);
        }
        Err(self.fail(format!(
            "{last}; check that the gateway runs and that --endpoint points at its admin API"
        )))
    }

    /// Sends `method path` with an optional JSON body. With `idempotent` (PUT, DELETE, a whole-config
    /// replacement), lost connections, resets, timeouts and 5xx answers are retried like GETs; else
    /// the request is sent once, since it may have taken effect before the connection was lost.
    /// 429 is waited out either way (the gateway did not act on the request).
    ///
    /// # Errors
    /// [`Error::Gateway`] when the gateway cannot be reached (the request may or may not have taken
    /// effect) or refuses the credentials. Other statuses are [`Answer::Refused`].
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Answer> {
        let url = self.url(path);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(backoff(attempt));
            }
            let mut req = self.agent.request(method, &url);
            for (k, v) in &self.headers {
                req = req.set(k, v);
            }
            let sent = match body {
                Some(b) => req.send_json(b),
                None => req.call(),
            };
            match sent {
                Ok(resp) => {
                    let mut out = Vec::new();
                    return match resp.into_reader().take(MAX_BODY).read_to_end(&mut out) {
                        Ok(_) => Ok(Answer::Done(out)),
                        // The gateway answered 2xx: the change took effect even if the body is cut.
                        Err(_) => Ok(Answer::Done(vec![])),
                    };
                }
                Err(ureq::Error::Status(code @ (401 | 403), _)) => {
                    return Err(self.fail(format!(
                        "HTTP {code} from {method} {url}: the admin API refused the request; {}",
                        self.auth_hint
                    )))
                }
                Err(ureq::Error::Status(429, resp)) => {
                    let wait = retry_after(&resp);
                    if wait > MAX_RETRY_AFTER {
                        return Ok(Answer::Refused {
                            status: 429,
                            message: format!("rate limited, and the gateway asks to wait {wait} s"),
                        });
                    }
                    std::thread::sleep(Duration::from_secs(wait));
                    last = format!(
                        "HTTP 429 from {method} {url} (rate limited) after {ATTEMPTS} attempts"
                    );
                }
                Err(ureq::Error::Status(code, resp)) if code >= 500 && idempotent => {
                    last = format!("HTTP {code} from {method} {url}: {}", message(resp));
                }
                Err(ureq::Error::Status(code, resp)) => {
                    return Ok(Answer::Refused {
                        status: code,
                        message: message(resp),
                    })
                }
                Err(ureq::Error::Transport(t)) => {
                    // The transport error names the URL.
                    last = format!("{method} {t}");
                    if !idempotent
                        || t.kind() == ureq::ErrorKind::InvalidUrl
                        || (t.kind() == ureq::ErrorKind::ConnectionFailed && attempt >= 1)
                    {
                        break;
                    }
                }
            }
            // Not `last`: the gateway's message may quote the request's secrets.
            tracing::debug!(
                "{method} {url}: attempt {} of {ATTEMPTS} failed",
                attempt + 1
            );
        }
        Err(self.fail(last))
    }

    /// GETs `path` as JSON; `None` for 404.
    ///
    /// # Errors
    /// As [`Client::get`], and [`Error::Gateway`] for a body that is not JSON.
    pub fn get_json(&self, path: &str) -> Result<Option<Value>> {
        match self.get(path)? {
            Reply::NotFound => Ok(None),
            Reply::Ok { body, .. } => serde_json::from_slice(&body).map(Some).map_err(|e| {
                self.fail(format!(
                    "malformed JSON from {}: {e}; is --endpoint the admin API?",
                    self.url(path)
                ))
            }),
        }
    }
}

/// The wait before retry `attempt` (1, 2, ...): 0.5 s doubling, with up to 25% jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 500u64 << (attempt - 1).min(6);
    let jitter = rand::random::<u64>() % (base / 4 + 1);
    Duration::from_millis(base + jitter)
}

/// The `message` field of an error body, or its first 200 characters.
fn message(resp: ureq::Response) -> String {
    let text = resp.into_string().unwrap_or_default();
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| text.chars().take(200).collect())
}

/// The seconds a 429 answer asks to wait (`Retry-After`; 1 when it does not say).
fn retry_after(resp: &ureq::Response) -> u64 {
    resp.header("Retry-After")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1)
}

/// An admin endpoint as a base URL: `http://` added when no scheme is given, no trailing slash.
pub fn base_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.contains("://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_bounded_jitter() {
        for a in 1..5 {
            let d = backoff(a).as_millis() as u64;
            let base = 500u64 << (a - 1);
            assert!((base..=base + base / 4).contains(&d), "attempt {a}: {d} ms");
        }
    }

    #[test]
    fn an_unreachable_endpoint_is_a_gateway_error_naming_it() {
        // Port 9 (discard) on loopback is closed on test machines.
        let c = Client::new("http://127.0.0.1:9", "kong at test".into(), vec![], "");
        let e = c.get_json("/").expect_err("nothing listens there");
        let msg = e.to_string();
        assert!(matches!(e, Error::Gateway { .. }), "{msg}");
        assert!(
            msg.contains("127.0.0.1:9") && msg.contains("--endpoint"),
            "{msg}"
        );
    }
}
