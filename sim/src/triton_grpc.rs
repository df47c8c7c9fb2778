//! `--serve triton --grpc-listen ADDR`: KServe v2 over gRPC (tonic), as Triton serves it:
//! `ServerReady`, `ModelReady`, `ModelMetadata`, `ModelInfer` (refused for a decoupled model,
//! as Triton does) and `ModelStreamInfer`: a decoupled model (`--decoupled`) streams one
//! response per chunk of audio, then, when the request asked with
//! `triton_enable_empty_final_response`, an empty response flagged `triton_final_response`; a
//! non-decoupled one answers the whole waveform once. A failed request gets a stream response
//! with `error_message` (the stream stays open). Faults (`/__sim/fault`) apply as over HTTP.

use crate::faults::{self, FaultKind};
use crate::model::Pacer;
use crate::state::{LastRequest, SimState};
use crate::triton::{self, Inputs, TritonConf};
use futures_util::Stream;
use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::infer_parameter::ParameterChoice;
use proto::model_infer_response::InferOutputTensor;
use proto::model_metadata_response::TensorMetadata;
use proto::{
    InferParameter, ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse,
    ModelReadyRequest, ModelReadyResponse, ModelStreamInferResponse, ServerReadyRequest, ServerReadyResponse,
};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

/// The generated KServe v2 messages and server (`../proto/kserve_inference.proto`).
#[allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
pub mod proto {
    tonic::include_proto!("inference");
}

const ENABLE_FINAL: &str = "triton_enable_empty_final_response";
const FINAL: &str = "triton_final_response";

/// The gRPC service.
pub struct Service {
    pub sim: Arc<SimState>,
    pub conf: Arc<TritonConf>,
}

/// Serves gRPC on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sim: Arc<SimState>,
    conf: Arc<TritonConf>,
) -> std::io::Result<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(
            GrpcInferenceServiceServer::new(Service { sim, conf })
                .max_decoding_message_size(super::routes::MAX_BODY)
                .max_encoding_message_size(usize::MAX),
        )
        .serve_with_incoming(incoming)
        .await
        .map_err(std::io::Error::other)
}

fn bool_param(v: bool) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::BoolParam(v)),
    }
}

fn inputs_of(req: &ModelInferRequest) -> Result<Inputs, String> {
    let mut inputs = Inputs::default();
    for (i, t) in req.inputs.iter().enumerate() {
        if let Some(raw) = req.raw_input_contents.get(i) {
            inputs.set_raw(&t.name, &t.datatype, raw)?;
            continue;
        }
        let c = t
            .contents
            .as_ref()
            .ok_or(format!("input '{}' has no data", t.name))?;
        match t.name.as_str() {
            "reference_wav" => inputs.reference_wav = c.fp32_contents.clone(),
            "reference_wav_len" => inputs.reference_wav_len = c.int_contents.first().copied(),
            "reference_text" | "target_text" => {
                let b = c.bytes_contents.first().ok_or(format!("{}: empty", t.name))?;
                let text = String::from_utf8(b.clone()).map_err(|_| format!("{}: not UTF-8", t.name))?;
                inputs.set_text(&t.name, text);
            }
            other => return Err(format!("unexpected input '{other}'")),
        }
    }
    inputs.validate()?;
    Ok(inputs)
}

fn response(model: &str, id: &str, samples: Option<&[f32]>, last: bool) -> ModelInferResponse {
    let (outputs, raw) = match samples {
        Some(s) => (
            vec![InferOutputTensor {
                name: "waveform".into(),
                datatype: "FP32".into(),
                shape: vec![1, i64::try_from(s.len()).unwrap_or(i64::MAX)],
                parameters: HashMap::new(),
                contents: None,
            }],
            vec![s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()],
        ),
        None => (Vec::new(), Vec::new()),
    };
    ModelInferResponse {
        model_name: model.into(),
        model_version: "1".into(),
        id: id.into(),
        parameters: HashMap::from([(FINAL.to_string(), bool_param(last))]),
        outputs,
        raw_output_contents: raw,
    }
}

type Sender = mpsc::Sender<Result<ModelStreamInferResponse, Status>>;

/// A stream item carrying a response (the stream's items are `Result`s).
#[allow(clippy::unnecessary_wraps)]
fn ok(r: ModelInferResponse) -> Result<ModelStreamInferResponse, Status> {
    Ok(ModelStreamInferResponse {
        error_message: String::new(),
        infer_response: Some(r),
    })
}

/// A stream item reporting a failed request, as Triton does (the stream stays open).
#[allow(clippy::unnecessary_wraps)]
fn failed(msg: &str) -> Result<ModelStreamInferResponse, Status> {
    Ok(ModelStreamInferResponse {
        error_message: msg.into(),
        infer_response: None,
    })
}

impl Service {
    /// Runs one request of a stream, sending its responses to `tx`.
    async fn run(sim: Arc<SimState>, conf: Arc<TritonConf>, req: ModelInferRequest, tx: Sender) {
        let parsed = inputs_of(&req);
        let mut last = LastRequest::new("ModelStreamInfer", "GRPC", req.encoded_len_hint());
        if let Ok(i) = &parsed {
            last = last.with_triton(i);
        }
        sim.received(last);
        if req.model_name != conf.model {
            let _ = tx
                .send(failed(&format!(
                    "Request for unknown model: '{}' is not found",
                    req.model_name
                )))
                .await;
            return;
        }
        let inputs = match parsed {
            Ok(i) => i,
            Err(e) => {
                let _ = tx.send(failed(&e)).await;
                return;
            }
        };
        let want_final = matches!(
            req.parameters
                .get(ENABLE_FINAL)
                .and_then(|p| p.parameter_choice.as_ref()),
            Some(ParameterChoice::BoolParam(true))
        );
        let fault = sim.faults.take();
        match fault {
            Some(FaultKind::Error500) => {
                let _ = tx.send(failed("simulated model failure (fault injected)")).await;
                return;
            }
            Some(FaultKind::Crash) => faults::crash(),
            Some(FaultKind::Hang) => {
                let _slot = sim.capacity.enter();
                // Until the client goes away.
                tx.closed().await;
                return;
            }
            Some(FaultKind::Endless) => {
                let _slot = sim.capacity.enter();
                let chunk = vec![0.0f32; 16 * 1024];
                while tx
                    .send(ok(response(&conf.model, &req.id, Some(&chunk), false)))
                    .await
                    .is_ok()
                {}
                return;
            }
            Some(FaultKind::Truncate) | None => {}
        }
        let _slot = sim.capacity.enter();
        let chunks = triton::chunks(&sim, &inputs.job());
        let mut pacer = Pacer::new(Arc::clone(&sim.capacity));
        if conf.decoupled {
            for (samples, work) in chunks {
                pacer.work(work).await;
                if tx
                    .send(ok(response(&conf.model, &req.id, Some(&samples), false)))
                    .await
                    .is_err()
                {
                    return;
                }
                if fault == Some(FaultKind::Truncate) {
                    let _ = tx
                        .send(Err(Status::internal("synthesis failed: stream cut")))
                        .await;
                    return;
                }
            }
            if want_final {
                let _ = tx.send(ok(response(&conf.model, &req.id, None, true))).await;
            }
        } else {
            for (_, work) in &chunks {
                pacer.work(*work).await;
            }
            if fault == Some(FaultKind::Truncate) {
                let _ = tx
                    .send(Err(Status::internal("synthesis failed: stream cut")))
                    .await;
                return;
            }
            let all: Vec<f32> = chunks.into_iter().flat_map(|(c, _)| c).collect();
            let _ = tx
                .send(ok(response(&conf.model, &req.id, Some(&all), true)))
                .await;
        }
    }
}

/// Size of a request for `/__sim/stats` (the raw tensors).
trait EncodedLen {
    fn encoded_len_hint(&self) -> usize;
}

impl EncodedLen for ModelInferRequest {
    fn encoded_len_hint(&self) -> usize {
        self.raw_input_contents.iter().map(Vec::len).sum()
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        Ok(Response::new(ModelReadyResponse {
            ready: req.get_ref().name == self.conf.model,
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        if req.get_ref().name != self.conf.model {
            return Err(Status::not_found(format!(
                "Request for unknown model: '{}' is not found",
                req.get_ref().name
            )));
        }
        let meta = |name: &str, datatype: &str, shape: [i64; 2]| TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
        };
        Ok(Response::new(ModelMetadataResponse {
            name: self.conf.model.clone(),
            versions: vec!["1".into()],
            platform: "python".into(),
            inputs: vec![
                meta("reference_wav", "FP32", [-1, -1]),
                meta("reference_wav_len", "INT32", [-1, 1]),
                meta("reference_text", "BYTES", [-1, 1]),
                meta("target_text", "BYTES", [-1, 1]),
            ],
            outputs: vec![meta("waveform", "FP32", [-1, -1])],
        }))
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        if self.conf.decoupled {
            return Err(Status::unimplemented(
                "ModelInfer RPC doesn't support models with decoupled transaction policy",
            ));
        }
        let (tx, mut rx) = mpsc::channel(4);
        Self::run(
            Arc::clone(&self.sim),
            Arc::clone(&self.conf),
            req.into_inner(),
            tx,
        )
        .await;
        match rx.recv().await {
            Some(Ok(r)) if r.error_message.is_empty() => r
                .infer_response
                .map(Response::new)
                .ok_or_else(|| Status::internal("no response")),
            Some(Ok(r)) => Err(Status::internal(r.error_message)),
            Some(Err(s)) => Err(s),
            None => Err(Status::internal("no response")),
        }
    }

    type ModelStreamInferStream = ResponseStream;

    async fn model_stream_infer(
        &self,
        req: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let (sim, conf) = (Arc::clone(&self.sim), Arc::clone(&self.conf));
        tokio::spawn(async move {
            let mut running = Vec::new();
            // Requests of one stream run concurrently, as Triton's do; the stream ends when
            // the client has half-closed and every request is answered.
            while let Ok(Some(r)) = inbound.message().await {
                running.push(tokio::spawn(Self::run(
                    Arc::clone(&sim),
                    Arc::clone(&conf),
                    r,
                    tx.clone(),
                )));
            }
            drop(tx);
            for task in running {
                let _ = task.await;
            }
        });
        let out = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        Ok(Response::new(Box::pin(out)))
    }
}
