//! The `grpc` transport: KServe v2 `ModelStreamInfer` (CosyVoice's `client_grpc.py` way), which
//! serves decoupled (streaming) models: one request, then `waveform` chunks, then an empty
//! response flagged `triton_final_response` (asked for with
//! `triton_enable_empty_final_response`). A non-decoupled model answers the same stream once.
//! Also the health check of such pools: `ModelReady` for the pool's model.
//!
//! One HTTP/2 connection per attempt (connecting is ~1 ms beside seconds of synthesis, and a
//! connection never outlives the Pingora runtime that made it); messages are capped at the
//! attempt's byte cap, and so is the sum of every chunk.

use super::{bytes_element, fp32_samples, TritonCall};
use crate::backend::attempt::{AttemptError, CONNECT_TIMEOUT};
use async_trait::async_trait;
use pingora::lb::health_check::{HealthCheck, HealthObserve};
use pingora::lb::Backend;
use proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use proto::infer_parameter::ParameterChoice;
use proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use proto::{InferParameter, ModelInferRequest, ModelReadyRequest};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// The generated KServe v2 messages and client (`proto/kserve_inference.proto`).
#[allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
pub mod proto {
    tonic::include_proto!("inference");
}

/// Request parameter asking Triton for the empty final response of a decoupled stream.
const ENABLE_FINAL: &str = "triton_enable_empty_final_response";
/// Response parameter marking the last response of a request.
const FINAL: &str = "triton_final_response";

async fn connect(addr: SocketAddr, connect_timeout: Duration) -> Result<Channel, AttemptError> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| AttemptError::Connect(e.to_string()))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| AttemptError::Connect(format!("{e}: {:?}", std::error::Error::source(&e))))
}

fn bool_param(v: bool) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::BoolParam(v)),
    }
}

fn input(name: &str, datatype: &str, shape: Vec<i64>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        parameters: HashMap::new(),
        contents: None,
    }
}

/// The stream's one request: every input as raw contents, in input order.
pub fn request(call: &TritonCall, request_id: &str) -> ModelInferRequest {
    let n = call.reference_wav.len();
    let mut inputs = vec![
        input(
            "reference_wav",
            "FP32",
            vec![1, i64::try_from(n).unwrap_or(i64::MAX)],
        ),
        input("reference_wav_len", "INT32", vec![1, 1]),
    ];
    let mut raw = vec![
        call.reference_wav
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect::<Vec<u8>>(),
        i32::try_from(n).unwrap_or(i32::MAX).to_le_bytes().to_vec(),
    ];
    if let Some(text) = &call.reference_text {
        inputs.push(input("reference_text", "BYTES", vec![1, 1]));
        raw.push(bytes_element(text));
    }
    inputs.push(input("target_text", "BYTES", vec![1, 1]));
    raw.push(bytes_element(&call.target_text));
    ModelInferRequest {
        model_name: call.model.clone(),
        model_version: String::new(),
        id: request_id.into(),
        parameters: HashMap::from([(ENABLE_FINAL.to_string(), bool_param(true))]),
        inputs,
        outputs: vec![InferRequestedOutputTensor {
            name: "waveform".into(),
            parameters: HashMap::new(),
        }],
        raw_input_contents: raw,
    }
}

/// A gRPC status as an attempt failure.
fn status_error(s: &tonic::Status, model: &str) -> AttemptError {
    let detail: String = s
        .message()
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    match s.code() {
        Code::Unavailable => AttemptError::Connect(detail),
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            AttemptError::Rejected { status: 400, detail }
        }
        Code::NotFound | Code::Unimplemented => AttemptError::Misconfigured(format!(
            "the backend does not serve model {model} over gRPC ModelStreamInfer (check \
             `model_name` and that the address is Triton's gRPC port): {detail}"
        )),
        _ => AttemptError::Status { status: 500, detail },
    }
}

/// One `ModelStreamInfer` exchange (the caller's deadline bounds it): the whole waveform.
pub async fn stream_infer(
    addr: SocketAddr,
    call: &TritonCall,
    request_id: &str,
    cap: usize,
) -> Result<Vec<f32>, AttemptError> {
    let channel = connect(addr, CONNECT_TIMEOUT).await?;
    let mut client = GrpcInferenceServiceClient::new(channel)
        .max_decoding_message_size(cap)
        .max_encoding_message_size(usize::MAX);
    // The request side stays open until the answer is complete, as CosyVoice's client_grpc.py
    // (tritonclient's start_stream ... stop_stream) keeps it: `requests` is dropped only when
    // this function returns.
    let (requests, outbound) = tokio::sync::mpsc::channel(1);
    requests
        .send(request(call, request_id))
        .await
        .map_err(|_| AttemptError::Connect("the request stream closed".into()))?;
    let outbound =
        futures_util::stream::unfold(outbound, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut req = tonic::Request::new(outbound);
    if let Ok(v) = request_id.parse() {
        req.metadata_mut().insert("x-request-id", v);
    }
    let mut stream = client
        .model_stream_infer(req)
        .await
        .map_err(|s| status_error(&s, &call.model))?
        .into_inner();
    let mut samples: Vec<f32> = Vec::new();
    let mut received = 0usize;
    loop {
        let msg = match stream.message().await {
            Ok(Some(msg)) => msg,
            // The server closed the stream: whatever came is the answer.
            Ok(None) => break,
            Err(s) if s.code() == Code::OutOfRange || s.message().contains("message length too large") => {
                return Err(AttemptError::TooLarge { limit: cap });
            }
            Err(s) if received > 0 => {
                return Err(AttemptError::Truncated {
                    after: received,
                    detail: s.message().chars().take(300).collect(),
                })
            }
            Err(s) => return Err(status_error(&s, &call.model)),
        };
        if !msg.error_message.is_empty() {
            let detail: String = msg
                .error_message
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect();
            return Err(if received > 0 {
                AttemptError::Truncated {
                    after: received,
                    detail,
                }
            } else {
                AttemptError::Status { status: 500, detail }
            });
        }
        let Some(resp) = msg.infer_response else {
            continue;
        };
        for (i, out) in resp.outputs.iter().enumerate() {
            if out.name != "waveform" {
                continue;
            }
            if out.datatype != "FP32" {
                return Err(AttemptError::BadAudio(format!(
                    "`waveform` is {}, not FP32",
                    out.datatype
                )));
            }
            let chunk = match (resp.raw_output_contents.get(i), &out.contents) {
                (Some(raw), _) => fp32_samples(raw)?,
                (None, Some(c)) => c.fp32_contents.clone(),
                (None, None) => Vec::new(),
            };
            received = received.saturating_add(chunk.len().saturating_mul(4));
            if received > cap {
                return Err(AttemptError::TooLarge { limit: cap });
            }
            samples.extend_from_slice(&chunk);
        }
        let last = matches!(
            resp.parameters
                .get(FINAL)
                .and_then(|p| p.parameter_choice.as_ref()),
            Some(ParameterChoice::BoolParam(true))
        );
        if last {
            break;
        }
    }
    drop(requests);
    Ok(samples)
}

/// Health check of `transport: grpc` pools: `ModelReady` for the pool's model (Triton's gRPC
/// port speaks no HTTP/1, so the HTTP check cannot be used).
pub struct ModelReadyCheck {
    pub model: String,
    pub timeout: Duration,
    pub healthy_after: usize,
    pub unhealthy_after: usize,
    pub observer: Option<Box<dyn HealthObserve + Send + Sync>>,
}

/// Whether Triton at `addr` reports `model` ready (gRPC `ModelReady`), within `timeout`: the
/// health probe of `transport: grpc` pools (also the restart supervisor's).
pub async fn model_ready(addr: SocketAddr, model: &str, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, ready(addr, model, timeout))
        .await
        .is_ok_and(|r| r == Ok(true))
}

async fn ready(addr: SocketAddr, model: &str, timeout: Duration) -> Result<bool, String> {
    let channel = connect(addr, timeout).await.map_err(|e| e.to_string())?;
    let mut client = GrpcInferenceServiceClient::new(channel);
    let resp = client
        .model_ready(ModelReadyRequest {
            name: model.to_string(),
            version: String::new(),
        })
        .await
        .map_err(|s| s.to_string())?;
    Ok(resp.into_inner().ready)
}

#[async_trait]
impl HealthCheck for ModelReadyCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let fail = |m: String| pingora::Error::explain(pingora::ErrorType::ConnectError, m);
        let addr = *target
            .addr
            .as_inet()
            .ok_or_else(|| fail("not an IP address".into()))?;
        match tokio::time::timeout(self.timeout, ready(addr, &self.model, self.timeout)).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(fail(format!("model {} is not ready", self.model))),
            Ok(Err(e)) => Err(fail(e)),
            Err(_) => Err(fail("ModelReady timed out".into())),
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(o) = &self.observer {
            o.observe(target, healthy).await;
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.healthy_after
        } else {
            self.unhealthy_after
        }
    }
}
