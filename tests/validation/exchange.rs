//! One raw HTTP/1.1 exchange with the gateway ([`exchange`]: frames a row's request, reads the
//! whole answer) and [`check`], which holds an answer to what its row wants.

use crate::table::{Req, Row, Want};
use cosygate::api::wav::parse_wav;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn frame(req: &Req) -> Vec<u8> {
    match req {
        Req::Raw(bytes) => bytes.clone(),
        Req::Http {
            method,
            path,
            headers,
            body,
        } => {
            let mut head = format!(
                "{method} {path} HTTP/1.1\r\nHost: cosygate.test\r\nConnection: close\r\nContent-Length: {}\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let mut out = head.into_bytes();
            out.extend_from_slice(body);
            out
        }
    }
}

/// Sends the request and reads the answer's head and exactly `Content-Length` body bytes (no
/// waiting for the server to close).
pub fn exchange(addr: SocketAddr, req: &Req) -> Result<Answer, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    s.write_all(&frame(req)).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let mut read_more = |s: &mut TcpStream, buf: &mut Vec<u8>| -> Result<bool, String> {
        let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if !read_more(&mut s, &mut buf)? {
            return Err(format!(
                "closed before the answer's head: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = answer
        .header("Content-Length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let body_start = head_end + 4;
    while buf.len() < body_start + len {
        if !read_more(&mut s, &mut buf)? {
            return Err(format!(
                "closed after {} of {len} body bytes; head {head:?}",
                buf.len() - body_start
            ));
        }
    }
    answer.body = buf[body_start..body_start + len].to_vec();
    Ok(answer)
}

/// Checks one answer against its row; `Err` says what is wrong.
pub fn check(row: &Row, a: &Answer) -> Result<(), String> {
    let request_id = a
        .header("X-Request-Id")
        .filter(|v| !v.is_empty())
        .ok_or("no X-Request-Id")?;
    let snippet = || String::from_utf8_lossy(&a.body[..a.body.len().min(300)]).into_owned();
    match &row.want {
        Want::Pass => {
            if a.status != 200 {
                return Err(format!("status {} (want 200): {}", a.status, snippet()));
            }
            if a.header("Content-Type") != Some("audio/wav") {
                return Err(format!("Content-Type {:?}", a.header("Content-Type")));
            }
            let info = parse_wav(&a.body).map_err(|e| format!("not a valid WAV: {e}"))?;
            if info.frames == 0 {
                return Err("a WAV without audio".into());
            }
        }
        Want::Refuse { status, code } => {
            if a.status != *status {
                return Err(format!("status {} (want {status}): {}", a.status, snippet()));
            }
            if a.header("Content-Type") != Some("application/json") {
                return Err(format!("Content-Type {:?}", a.header("Content-Type")));
            }
            let v: Value =
                serde_json::from_slice(&a.body).map_err(|e| format!("not JSON ({e}): {}", snippet()))?;
            let top = v.as_object().ok_or("the body is not an object")?;
            let inner = v["error"].as_object().ok_or("no `error` object")?;
            let mut keys: Vec<&str> = inner.keys().map(String::as_str).collect();
            keys.sort_unstable();
            if top.len() != 1 || keys != ["code", "message", "request_id"] {
                return Err(format!(
                    "error shape is not {{error:{{code,message,request_id}}}}: {v}"
                ));
            }
            let got = v["error"]["code"].as_str().unwrap_or_default();
            if got != *code {
                return Err(format!("code {got:?} (want {code:?}): {v}"));
            }
            if v["error"]["message"].as_str().is_none_or(str::is_empty) {
                return Err(format!("empty message: {v}"));
            }
            if v["error"]["request_id"].as_str() != Some(request_id) {
                return Err(format!("X-Request-Id {request_id} differs from the body's: {v}"));
            }
            if *status == 405 && a.header("Allow").is_none() {
                return Err("405 without Allow".into());
            }
        }
    }
    Ok(())
}
