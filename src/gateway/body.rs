//! Reading the downstream request body whole, within `limits.max_body`: refuse conflicting
//! framing, refuse a declared oversize body before reading a byte of it, answer
//! `Expect: 100-continue`, and stop reading a chunked body as soon as it passes the limit. Every
//! body's bytes are reserved in the global budget (`body_budget`) before they are read.

use super::body_budget::{BodyBudget, Reservation};
use super::ApiError;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use pingora::proxy::Session;
use std::sync::Arc;
use std::time::Duration;

/// Reads the whole request body, or says why not, with the reservation that holds its bytes in
/// `budget` (keep it as long as the body or its decoded form is held). Errors that leave unread
/// bytes on the connection are marked `closing`.
pub async fn read_body(
    session: &mut Session,
    max: usize,
    deadline: Duration,
    budget: &Arc<BodyBudget>,
) -> Result<(Bytes, Reservation), ApiError> {
    match tokio::time::timeout(deadline, read_within(session, max, budget)).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::new(
            408,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s; send it at once",
                deadline.as_secs_f64()
            ),
        )
        .closing()),
    }
}

async fn read_within(
    session: &mut Session,
    max: usize,
    budget: &Arc<BodyBudget>,
) -> Result<(Bytes, Reservation), ApiError> {
    let declared = declared_length(session)?;
    if let Some(len) = declared {
        if len > max {
            return Err(too_large(max).closing());
        }
    }
    // Before 100-continue and before a byte of the body: refused bodies are never sent.
    let mut reservation = Reservation::new(budget, declared.unwrap_or(0))?;
    let expects_continue = session
        .req_header()
        .headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session.write_continue_response().await.map_err(|e| {
            ApiError::bad_request("invalid_body", format!("cannot answer 100-continue: {e}")).closing()
        })?;
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(max));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(too_large(max).closing());
                }
                reservation.cover(body.len() + chunk.len())?;
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    format!("the request body could not be read: {e}"),
                )
                .closing())
            }
        }
    }
    Ok((body.freeze(), reservation))
}

/// The body length the headers declare, refusing ambiguous framing (request smuggling).
fn declared_length(session: &Session) -> Result<Option<usize>, ApiError> {
    let headers = &session.req_header().headers;
    let chunked = headers.contains_key(TRANSFER_ENCODING);
    if chunked && (headers.contains_key(CONTENT_LENGTH) || raw_has_content_length(session)) {
        return Err(ApiError::bad_request(
            "conflicting_framing",
            "the request has both Content-Length and Transfer-Encoding; send only one",
        )
        .closing());
    }
    let lengths: Vec<&[u8]> = headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if lengths.is_empty() {
        return Ok(None);
    }
    let mut values = lengths.iter().flat_map(|v| v.split(|b| *b == b',')).map(|v| {
        std::str::from_utf8(v)
            .ok()
            .map(str::trim)
            .and_then(|v| v.parse::<usize>().ok())
    });
    let first = values.next().flatten();
    let all_same = values.all(|v| v.is_some() && v == first);
    match first {
        Some(len) if all_same => Ok(Some(len)),
        _ => Err(ApiError::bad_request(
            "conflicting_framing",
            "the request's Content-Length is invalid or repeated with different values",
        )
        .closing()),
    }
}

/// Pingora 0.9.1 drops Content-Length when Transfer-Encoding is present (RFC 9112 allows that),
/// so the conflict is only visible in the raw HTTP/1 header bytes. We refuse it instead: a
/// request framed two ways is a smuggling attempt, not a client mistake.
fn raw_has_content_length(session: &Session) -> bool {
    let Some(h1) = session.as_downstream().as_http1() else {
        return false;
    };
    h1.get_headers_raw_bytes()
        .split(|b| *b == b'\n')
        .any(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        413,
        "body_too_large",
        format!("the request body is larger than the limit of {max} bytes; use a shorter prompt audio"),
    )
}
