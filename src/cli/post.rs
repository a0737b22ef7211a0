//! One write request, retried while the server pushes back: the sending loop that
//! `tidemark load write` and `tidemark import` share.
//!
//! 503 and 429 (the write buffer is full, or too many requests) and connection failures
//! are retried, after the server's `Retry-After` when it gives one, else after a backoff
//! doubling from 50 ms to 5 s. Any other answer is final.

use std::time::{Duration, Instant};

/// Why a request did not succeed.
#[derive(Debug)]
pub enum Refused {
    /// The server answered with an error status (after retries, if it was retryable).
    Status { status: u16, body: String },
    /// The request did not get an answer.
    Transport(String),
}

impl Refused {
    /// A short description for summaries: the status and the first line of the message.
    pub fn kind(&self) -> String {
        match self {
            Refused::Status { status, body } => format!("HTTP {status}: {}", first_line(body)),
            Refused::Transport(e) => e.clone(),
        }
    }
}

/// POSTs `body` until it is acknowledged, refused for good, or `attempts` are used up.
/// `on_attempt(bytes, retry)` is called for every request sent. Returns the latency of
/// the request that succeeded.
///
/// # Errors
/// The last refusal.
pub fn post_retrying(
    client: &reqwest::blocking::Client,
    url: &str,
    body: &bytes::Bytes,
    gzip: bool,
    attempts: u32,
    mut on_attempt: impl FnMut(u64, bool),
) -> Result<Duration, Refused> {
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        attempt += 1;
        // `Bytes`: a retry sends the same buffer again without copying it.
        let mut req = client.post(url).body(body.clone());
        if gzip {
            req = req.header("content-encoding", "gzip");
        }
        let t = Instant::now();
        let result = req.send();
        on_attempt(body.len() as u64, attempt > 1);
        let (retry_after, refused) = match result {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                // Read the body so that the connection can be reused.
                let text = resp.text().unwrap_or_default();
                if status.is_success() {
                    return Ok(t.elapsed());
                }
                let refused = Refused::Status {
                    status: status.as_u16(),
                    body: text,
                };
                if !matches!(status.as_u16(), 503 | 429) {
                    return Err(refused);
                }
                (retry_after, refused)
            }
            Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                (None, Refused::Transport(format!("connection: {e}")))
            }
            Err(e) => return Err(Refused::Transport(format!("request: {e}"))),
        };
        if attempt >= attempts.max(1) {
            return Err(refused);
        }
        std::thread::sleep(retry_after.unwrap_or(backoff));
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The server's error message (or the body), first line, at most 120 characters.
pub fn first_line(text: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("error").and_then(|m| m.as_str().map(str::to_string)))
        .unwrap_or_else(|| text.to_string());
    message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(120)
        .collect()
}
