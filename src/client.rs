//! HTTP: one reused `ureq::Agent`, timeouts, the body size cap, and classification of
//! every outcome into something the caller can act on.
//!
//! The client makes exactly one attempt per call and never sleeps: deciding whether and
//! when to try again belongs to the retry policy.
//!
//! Redirects are never followed: the Kalshi API does not redirect, and following one to
//! another host would silently change where data comes from. A 3xx is a permanent error
//! naming its `Location`.

use std::io::Read;
use std::time::{Duration, Instant};

use ureq::Agent;
use ureq::http::StatusCode;

use crate::body::BufferPool;

/// Settings for the HTTP client.
#[derive(Clone, Debug)]
pub(crate) struct ClientConfig {
    /// Base URL without a trailing slash, e.g. `https://host/trade-api/v2`.
    pub(crate) base_url: String,
    /// The longest wait for connecting or for any single read: a stalled transfer fails
    /// after this long even while a large body is still arriving.
    pub(crate) timeout: Duration,
    /// The largest response body accepted, in bytes.
    pub(crate) max_body_bytes: u64,
}

/// Why an attempt failed, in the classes the retry policy and the summary use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum FailureClass {
    /// The host name did not resolve.
    Dns,
    /// The TCP or TLS connection could not be set up.
    Connect,
    /// No progress within the timeout (connect, response or body).
    Timeout,
    /// The connection was reset or closed early.
    Reset,
    /// The body ended before its declared length or is cut-off JSON.
    Truncated,
    /// A 200 whose body is not the expected JSON (HTML error page, wrong shape).
    BadBody,
    /// A record inside an otherwise valid page cannot be parsed; retrying cannot help.
    BadRecord,
    /// HTTP 429.
    RateLimited,
    /// HTTP 408, 425 or 5xx.
    ServerError,
    /// HTTP 404: the path or the record does not exist (a detail endpoint records the
    /// id as not found and goes on).
    NotFound,
    /// Any other 4xx or a 3xx: retrying the same request cannot help.
    ClientError,
    /// The body is larger than the configured cap.
    TooLarge,
    /// A TLS certificate or protocol failure, a bad URL, or anything else that
    /// retrying cannot fix.
    Fatal,
}

impl FailureClass {
    /// Whether trying the same request again may succeed.
    pub(crate) fn is_transient(self) -> bool {
        !matches!(
            self,
            FailureClass::ClientError
                | FailureClass::NotFound
                | FailureClass::TooLarge
                | FailureClass::Fatal
                | FailureClass::BadRecord
        )
    }

    /// The snake_case name used in the summary and logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FailureClass::Dns => "dns",
            FailureClass::Connect => "connect",
            FailureClass::Timeout => "timeout",
            FailureClass::Reset => "reset",
            FailureClass::Truncated => "truncated",
            FailureClass::BadBody => "bad_body",
            FailureClass::BadRecord => "bad_record",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::ServerError => "server_error",
            FailureClass::NotFound => "not_found",
            FailureClass::ClientError => "client_error",
            FailureClass::TooLarge => "too_large",
            FailureClass::Fatal => "fatal",
        }
    }
}

/// A failed attempt: its class, a one-line reason, and what the server said if it
/// answered at all.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) class: FailureClass,
    pub(crate) reason: String,
    /// The raw `Retry-After` header of a 429/503, if any.
    pub(crate) retry_after: Option<String>,
    /// The HTTP status, when the server answered with one other than 200.
    pub(crate) status: Option<u16>,
}

impl Failure {
    pub(crate) fn new(class: FailureClass, reason: impl Into<String>) -> Failure {
        Failure {
            class,
            reason: reason.into(),
            retry_after: None,
            status: None,
        }
    }
}

/// A successful (HTTP 200) response.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) body: Vec<u8>,
    pub(crate) elapsed: Duration,
}

/// The HTTP client: one agent, reused for every request of the run (a clone shares
/// the agent's connection pool and the body buffer pool).
#[derive(Clone)]
pub(crate) struct Client {
    agent: Agent,
    config: ClientConfig,
    /// Buffers response bodies are read into.
    pool: BufferPool,
}

impl Client {
    pub(crate) fn new(config: ClientConfig) -> Client {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(config.timeout))
            .timeout_resolve(Some(config.timeout))
            .timeout_per_read(Some(config.timeout))
            .timeout_per_write(Some(config.timeout))
            .user_agent(concat!("kalshi-ingest/", env!("CARGO_PKG_VERSION")))
            .accept("application/json")
            .build()
            .into();
        Client {
            agent,
            config,
            pool: BufferPool::default(),
        }
    }

    /// The pool response bodies are read into; a body's text gives its buffer back.
    pub(crate) fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// The base URL this client talks to.
    pub(crate) fn base_url(&self) -> &str {
        &self.config.base_url
    }

    /// The host (and port) of the base URL, for messages.
    pub(crate) fn host(&self) -> &str {
        let rest = self
            .config
            .base_url
            .split_once("://")
            .map_or(self.config.base_url.as_str(), |(_, rest)| rest);
        rest.split('/').next().unwrap_or(rest)
    }

    /// The full URL of `path` with `query`, as used in messages.
    pub(crate) fn url_for(&self, path: &str, query: &[(&str, String)]) -> String {
        let mut url = format!("{}{path}", self.config.base_url);
        for (i, (key, value)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(key);
            url.push('=');
            url.push_str(&percent_encode(value));
        }
        url
    }

    /// One GET attempt of `url` (from [`Client::url_for`]). `Ok` only for HTTP 200 with
    /// a body within the cap.
    pub(crate) fn get(&self, url: &str) -> Result<Fetched, Failure> {
        let started = Instant::now();
        let mut response = self.agent.get(url).call().map_err(|e| {
            // No headers yet: a connection closed early is a reset, not a cut body.
            let mut failure = classify_ureq_error(&e);
            if failure.class == FailureClass::Truncated {
                failure.class = FailureClass::Reset;
            }
            if failure.class == FailureClass::Fatal {
                failure.reason = format!(
                    "{} (TLS certificates are always verified, against the Mozilla roots \
                     built into kalshi-ingest)",
                    failure.reason
                );
            }
            failure
        })?;
        let status = response.status();
        if status != StatusCode::OK {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // Read a little of the body for the message, then drop the connection.
            let mut snippet = Vec::new();
            let _ = response
                .body_mut()
                .as_reader()
                .take(300)
                .read_to_end(&mut snippet);
            let mut failure = classify_status(status.as_u16(), &snippet, location.as_deref());
            failure.retry_after = retry_after;
            failure.status = Some(status.as_u16());
            return Err(failure);
        }
        let declared = response.body().content_length();
        if let Some(len) = declared.filter(|len| *len > self.config.max_body_bytes) {
            return Err(too_large(len, self.config.max_body_bytes));
        }
        let capacity = declared
            .unwrap_or(64 * 1024)
            .min(self.config.max_body_bytes);
        let mut body = self.pool.take(usize::try_from(capacity).unwrap_or(0));
        // Read one byte past the cap so an oversized body of unknown length is detected.
        let read = response
            .body_mut()
            .as_reader()
            .take(self.config.max_body_bytes + 1)
            .read_to_end(&mut body);
        if let Err(e) = read {
            // The headers arrived: a connection lost now leaves the body cut short,
            // and data that does not decode (gzip) is a bad body, not a TLS failure.
            let mut failure = classify_io_error(&e);
            match failure.class {
                FailureClass::Reset => failure.class = FailureClass::Truncated,
                FailureClass::Fatal => failure.class = FailureClass::BadBody,
                _ => {}
            }
            return Err(failure);
        }
        if body.len() as u64 > self.config.max_body_bytes {
            return Err(too_large(body.len() as u64, self.config.max_body_bytes));
        }
        Ok(Fetched {
            body,
            elapsed: started.elapsed(),
        })
    }
}

fn too_large(len: u64, cap: u64) -> Failure {
    Failure::new(
        FailureClass::TooLarge,
        format!(
            "response body of {len}+ bytes exceeds the cap of {cap} bytes (raise --max-body-mb)"
        ),
    )
}

/// Classifies a non-200 status.
fn classify_status(status: u16, snippet: &[u8], location: Option<&str>) -> Failure {
    let text = String::from_utf8_lossy(snippet);
    let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    let class = match status {
        429 => FailureClass::RateLimited,
        408 | 425 | 500..=599 => FailureClass::ServerError,
        300..=399 => {
            let target = location.unwrap_or("(no Location header)");
            return Failure::new(
                FailureClass::ClientError,
                format!(
                    "HTTP {status} redirect to {target}: redirects are not followed (check --base-url)"
                ),
            );
        }
        404 => FailureClass::NotFound,
        _ => FailureClass::ClientError,
    };
    Failure::new(class, format!("HTTP {status}: {}", text.trim()))
}

/// Classifies an error from sending the request or receiving the headers.
fn classify_ureq_error(err: &ureq::Error) -> Failure {
    use ureq::Error as E;
    let class = match err {
        E::HostNotFound => FailureClass::Dns,
        E::ConnectionFailed => FailureClass::Connect,
        E::Timeout(ureq::Timeout::Resolve) => FailureClass::Dns,
        E::Timeout(ureq::Timeout::Connect) => FailureClass::Connect,
        E::Timeout(_) => FailureClass::Timeout,
        E::Io(io) => return classify_io_error(io),
        E::Protocol(_) => FailureClass::Truncated,
        E::BodyExceedsLimit(_) => FailureClass::TooLarge,
        E::BadUri(_) | E::Tls(_) | E::Rustls(_) | E::RequireHttpsOnly(_) => FailureClass::Fatal,
        E::TooManyRedirects | E::RedirectFailed => FailureClass::ClientError,
        _ => FailureClass::Reset,
    };
    Failure::new(class, err.to_string())
}

/// Classifies an I/O error, which may wrap a `ureq::Error` (body reads do).
fn classify_io_error(err: &std::io::Error) -> Failure {
    use std::io::ErrorKind as K;
    if let Some(inner) = err.get_ref().and_then(|e| e.downcast_ref::<ureq::Error>()) {
        return classify_ureq_error(inner);
    }
    // A name that does not resolve reaches us from the system resolver as an
    // uncategorized io::Error ("failed to lookup address information: Name or
    // service not known"); without this it would count as a reset and send a run
    // with a mistyped host (or no network) into the 55-minute recovery ladder.
    if err
        .to_string()
        .contains("failed to lookup address information")
    {
        return Failure::new(FailureClass::Dns, err.to_string());
    }
    let class = match err.kind() {
        K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
            FailureClass::Connect
        }
        K::TimedOut | K::WouldBlock => FailureClass::Timeout,
        K::UnexpectedEof => FailureClass::Truncated,
        // rustls reports a certificate or handshake failure as InvalidData.
        K::InvalidData => FailureClass::Fatal,
        _ => FailureClass::Reset,
    };
    Failure::new(class, err.to_string())
}

/// Percent-encodes an id as one path segment. Like a query value, except that a
/// segment of only dots (`.`, `..`) is encoded whole, so no client, proxy or server can
/// read it as a step up the path; an empty id has no segment and must not be asked for.
pub(crate) fn encode_path_segment(id: &str) -> String {
    if id.bytes().all(|b| b == b'.') {
        return "%2E".repeat(id.len());
    }
    percent_encode(id)
}

/// Percent-encodes a query value (everything but unreserved characters).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            classify_status(429, b"", None).class,
            FailureClass::RateLimited
        );
        for s in [408, 425, 500, 502, 503, 504] {
            assert_eq!(
                classify_status(s, b"", None).class,
                FailureClass::ServerError
            );
            assert!(FailureClass::ServerError.is_transient());
        }
        for s in [400, 401, 403, 404, 410] {
            let f = classify_status(s, br#"{"error":{"code":"not_found"}}"#, None);
            let want = if s == 404 {
                FailureClass::NotFound
            } else {
                FailureClass::ClientError
            };
            assert_eq!(f.class, want);
            assert!(!f.class.is_transient());
            assert!(f.reason.contains(&s.to_string()) && f.reason.contains("not_found"));
        }
        let redirect = classify_status(302, b"", Some("http://elsewhere/"));
        assert!(!redirect.class.is_transient());
        assert!(redirect.reason.contains("http://elsewhere/"));
    }

    #[test]
    fn resolver_failures_are_dns_failures() {
        let err = std::io::Error::other(
            "failed to lookup address information: Name or service not known",
        );
        assert_eq!(classify_io_error(&err).class, FailureClass::Dns);
        let wrapped = std::io::Error::other(ureq::Error::Io(err));
        assert_eq!(classify_io_error(&wrapped).class, FailureClass::Dns);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(classify_io_error(&refused).class, FailureClass::Connect);
    }

    #[test]
    fn query_values_are_encoded() {
        let client = Client::new(ClientConfig {
            base_url: "http://127.0.0.1:1/v2".into(),
            timeout: Duration::from_secs(1),
            max_body_bytes: 10,
        });
        assert_eq!(
            client.url_for(
                "/markets",
                &[("limit", "1000".into()), ("cursor", "a b/+=".into())]
            ),
            "http://127.0.0.1:1/v2/markets?limit=1000&cursor=a%20b%2F%2B%3D"
        );
    }
}
