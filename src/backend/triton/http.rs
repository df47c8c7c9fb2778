//! The `http` transport: `POST /v2/models/{model}/infer` with KServe's binary tensor extension.
//!
//! Request body: the compact JSON inference header, then each input's raw bytes in order;
//! `Inference-Header-Content-Length` gives the JSON's length, each input its
//! `parameters.binary_data_size`, and `waveform` is asked for with `binary_data: true`. The
//! answer is 200 with the same layout (or, from servers that ignore the extension, plain JSON
//! with a `data` array); errors are non-200 with `{"error": "..."}`. A decoupled model answers
//! 501: Triton serves those only over gRPC, so that is a configuration error.

use super::{bytes_element, fp32_samples, TritonCall};
use crate::backend::attempt::{exchange_into, AttemptError, BodySink, Collect, Exchange};
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use serde_json::{json, Value};
use std::net::SocketAddr;

/// KServe's header naming the JSON part's length in a binary-extension body.
pub const IHCL: &str = "Inference-Header-Content-Length";

/// The request body (JSON header, then tensors) and the JSON's length.
pub fn body(call: &TritonCall) -> (Bytes, usize) {
    let wav: Vec<u8> = call.reference_wav.iter().flat_map(|s| s.to_le_bytes()).collect();
    let len = i32::try_from(call.reference_wav.len()).unwrap_or(i32::MAX);
    let mut tensors: Vec<(&str, &str, Vec<u8>)> = vec![
        ("reference_wav", "FP32", wav),
        ("reference_wav_len", "INT32", len.to_le_bytes().to_vec()),
    ];
    if let Some(text) = &call.reference_text {
        tensors.push(("reference_text", "BYTES", bytes_element(text)));
    }
    tensors.push(("target_text", "BYTES", bytes_element(&call.target_text)));
    let inputs: Vec<Value> = tensors
        .iter()
        .map(|(name, dtype, raw)| {
            let shape = if *name == "reference_wav" {
                json!([1, call.reference_wav.len()])
            } else {
                json!([1, 1])
            };
            json!({"name": name, "shape": shape, "datatype": dtype,
                   "parameters": {"binary_data_size": raw.len()}})
        })
        .collect();
    let header = json!({
        "inputs": inputs,
        "outputs": [{"name": "waveform", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut out = BytesMut::with_capacity(header.len() + tensors.iter().map(|t| t.2.len()).sum::<usize>());
    out.extend_from_slice(header.as_bytes());
    for (_, _, raw) in &tensors {
        out.extend_from_slice(raw);
    }
    (out.freeze(), header.len())
}

/// One `/infer` exchange (no deadline of its own: the caller's bounds it): the waveform.
pub async fn infer(
    connector: &Connector,
    addr: SocketAddr,
    call: &TritonCall,
    request_id: &str,
    cap: usize,
) -> Result<Vec<f32>, AttemptError> {
    let path = format!("/v2/models/{}/infer", call.model);
    let (status, json_len, body) = exchange(connector, addr, &path, call, request_id, cap).await?;
    match status {
        200 => decode(&body, json_len),
        501 => Err(AttemptError::Misconfigured(format!(
            "model {} is decoupled (streaming); Triton serves decoupled models only over gRPC: \
             set `transport: grpc` on this pool, or `decoupled: False` in the model's config ({})",
            call.model,
            error_message(&body)
        ))),
        400..=499 => Err(AttemptError::Rejected {
            status,
            detail: error_message(&body),
        }),
        _ => Err(AttemptError::Status {
            status,
            detail: error_message(&body),
        }),
    }
}

/// `{"error": "..."}`'s message, or the start of the body.
fn error_message(body: &[u8]) -> String {
    let msg = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    msg.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// The `waveform` output of a 200 answer: binary (after `json_len` bytes of JSON) or JSON `data`.
pub fn decode(body: &[u8], json_len: Option<usize>) -> Result<Vec<f32>, AttemptError> {
    let bad = |m: String| AttemptError::BadAudio(m);
    let json_len = json_len.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(bad(format!(
            "{IHCL} is {json_len}, the body has only {} bytes",
            body.len()
        )));
    }
    let header: Value = serde_json::from_slice(&body[..json_len])
        .map_err(|e| bad(format!("the inference header is not JSON: {e}")))?;
    let outputs = header
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("the answer has no `outputs`".into()))?;
    let mut offset = json_len;
    for out in outputs {
        let size = out
            .pointer("/parameters/binary_data_size")
            .and_then(Value::as_u64)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        if out.get("name").and_then(Value::as_str) != Some("waveform") {
            offset = offset.saturating_add(size.unwrap_or(0));
            continue;
        }
        if out.get("datatype").and_then(Value::as_str) != Some("FP32") {
            return Err(bad(format!(
                "`waveform` is {}, not FP32",
                out.get("datatype").unwrap_or(&Value::Null)
            )));
        }
        return match size {
            Some(size) => {
                let end = offset
                    .checked_add(size)
                    .filter(|end| *end <= body.len())
                    .ok_or_else(|| bad(format!("`waveform` claims {size} bytes past the body's end")))?;
                fp32_samples(&body[offset..end])
            }
            None => out
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("`waveform` has neither binary data nor `data`".into()))?
                .iter()
                .map(|v| {
                    v.as_f64()
                        .map(|f| f as f32)
                        .ok_or_else(|| bad("`waveform` data holds a non-number".into()))
                })
                .collect(),
        };
    }
    Err(bad("the answer has no `waveform` output".into()))
}

/// Sends the request; returns the status, the answer's JSON length (IHCL) and its body
/// (a 200's up to `cap` bytes, past which it is abandoned; of others the first
/// `attempt::ERROR_BODY_MAX` bytes), through the one HTTP exchange every protocol uses
/// (`attempt::exchange_into`).
async fn exchange(
    connector: &Connector,
    addr: SocketAddr,
    path: &str,
    call: &TritonCall,
    request_id: &str,
    cap: usize,
) -> Result<(u16, Option<usize>, Bytes), AttemptError> {
    let headers = [(IHCL, call.http_json_len.to_string())];
    let ex = Exchange {
        method: "POST",
        path,
        content_type: Some("application/octet-stream"),
        body: call.http_body.clone(),
        headers: &headers,
    };
    let mut answer = Answer {
        body: Collect::new(cap),
        json_len: None,
    };
    let (status, error_body) = exchange_into(connector, addr, &ex, request_id, cap, &mut answer).await?;
    if status == 200 {
        Ok((200, answer.json_len, answer.body.body.freeze()))
    } else {
        Ok((status, None, error_body))
    }
}

/// A 200 answer's body and the length of its JSON part (`Inference-Header-Content-Length`).
struct Answer {
    body: Collect<'static>,
    json_len: Option<usize>,
}

impl BodySink for Answer {
    fn take(&mut self, chunk: &[u8]) -> Result<bool, AttemptError> {
        self.body.take(chunk)
    }

    fn header(&mut self, header: &pingora::http::ResponseHeader) {
        self.json_len = header
            .headers
            .get(IHCL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_json_answers_decode_and_lying_sizes_do_not() {
        let header = r#"{"model_name":"cosyvoice3","outputs":[{"name":"other","datatype":"INT32","shape":[1],"parameters":{"binary_data_size":4}},{"name":"waveform","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&7i32.to_le_bytes());
        body.extend_from_slice(&0.5f32.to_le_bytes());
        body.extend_from_slice(&(-0.25f32).to_le_bytes());
        assert_eq!(decode(&body, Some(header.len())), Ok(vec![0.5, -0.25]));
        assert!(
            decode(&body[..body.len() - 1], Some(header.len())).is_err(),
            "cut"
        );
        assert!(decode(&body, Some(body.len() + 1)).is_err(), "IHCL past the end");
        let json =
            br#"{"outputs":[{"name":"waveform","datatype":"FP32","shape":[1,3],"data":[0.0,1.0,-1.0]}]}"#;
        assert_eq!(decode(json, None), Ok(vec![0.0, 1.0, -1.0]));
        assert!(decode(br#"{"outputs":[]}"#, None).is_err());
    }

    #[test]
    fn the_body_is_the_json_header_then_every_tensor() {
        let call = TritonCall {
            model: "cosyvoice3".into(),
            transport: crate::config::TritonTransport::Http,
            reference_wav: vec![0.5; 3],
            reference_text: Some("ref".into()),
            target_text: "hi".into(),
            http_body: Bytes::new(),
            http_json_len: 0,
        };
        let (b, n) = body(&call);
        let header: Value = serde_json::from_slice(&b[..n]).expect("json");
        let sizes: Vec<u64> = header["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|i| i["parameters"]["binary_data_size"].as_u64().expect("size"))
            .collect();
        assert_eq!(sizes, vec![12, 4, 7, 6]);
        assert_eq!(b.len(), n + 29);
        assert_eq!(&b[b.len() - 6..], b"\x02\0\0\0hi");
        assert_eq!(header["outputs"][0]["parameters"]["binary_data"], true);
    }
}
