//! Writing answers to the client: the WAV, JSON bodies and errors (in the route's shape), each
//! complete with `Content-Length` and `X-Request-Id`.

use super::api_error::{ApiError, ErrorShape};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// Writes a complete response: status, content type, extra headers, and the body.
pub async fn send(
    session: &mut Session,
    status: u16,
    content_type: &str,
    headers: &[(&'static str, String)],
    request_id: &str,
    body: Bytes,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + headers.len()))?;
    resp.insert_header("Content-Type", content_type)?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("X-Request-Id", request_id)?;
    for (name, value) in headers {
        resp.append_header(*name, value.as_str())?;
    }
    session
        .write_response_header(Box::new(resp), body.is_empty())
        .await?;
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Writes `204 No Content`: no body, no `Content-Type` and no `Content-Length` (RFC 9110).
pub async fn send_no_content(
    session: &mut Session,
    headers: &[(&'static str, String)],
    request_id: &str,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(204, Some(1 + headers.len()))?;
    resp.insert_header("X-Request-Id", request_id)?;
    for (name, value) in headers {
        resp.append_header(*name, value.as_str())?;
    }
    session.write_response_header(Box::new(resp), true).await
}

/// Writes an error in the contract's JSON shape, closing the connection when the error says so.
/// Returns the body's length.
pub async fn send_error(
    session: &mut Session,
    err: &ApiError,
    shape: ErrorShape,
    request_id: &str,
) -> pingora::Result<usize> {
    if err.close {
        session.set_keepalive(None);
    }
    let mut headers = vec![("Cache-Control", "no-store".to_string())];
    headers.extend(err.headers.iter().cloned());
    let body = Bytes::from(err.to_json_in(shape, request_id));
    let len = body.len();
    send(
        session,
        err.status,
        "application/json",
        &headers,
        request_id,
        body,
    )
    .await?;
    Ok(len)
}
