//! Streaming answers: audio written as it is produced, in chunked transfer encoding.
//!
//! Framing (the README's "Streaming"):
//! - `AudioFormat::Wav`: a 44-byte WAV header whose RIFF and data sizes are `0xFFFFFFFF`
//!   (unknown length), then signed 16-bit little-endian PCM as it comes;
//! - `AudioFormat::Pcm`: the raw PCM alone (CosyVoice's routes, OpenAI's `pcm`);
//! - `AudioFormat::OpenAiSse`: OpenAI's `stream_format: "sse"`: each piece of the above (the
//!   streaming WAV header and PCM, or PCM alone) as a `speech.audio.delta` event with its bytes
//!   in base64, then one `speech.audio.done` event.
//!
//! Nothing is sent before the first audio, so every refusal or failure before it is a normal
//! JSON error with its status. A stream that cannot be completed after audio was sent (the
//! backend cut it and no retry can continue it seamlessly) is ended without the terminating
//! zero-length chunk and the connection is closed: HTTP clients report an incomplete body
//! (curl exit 18, Python `requests` `ChunkedEncodingError`), never a silently short WAV.
//!
//! A cache hit streams in the same framing; so does an identical request joining a synthesis
//! in flight, from its first byte.

use super::synthesis::{AudioFormat, PCM_CONTENT_TYPE};
use super::{ApiError, Gateway, RequestCtx};
use crate::api::wav;
use crate::synth::{Degraded, LiveReader, Next, PcmFormat, SynthError, Synthesized, Tap};
use bytes::{Bytes, BytesMut};
use log::{info, warn};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// What the answer's headers say about where its audio comes from.
pub(super) struct StreamHead {
    /// `X-Cache` and friends, and the rate-limit budget.
    pub headers: Vec<(&'static str, String)>,
}

/// How a stream ended.
pub(super) enum Streamed {
    /// Every byte was sent and the body ended properly.
    Whole,
    /// Failed before any audio: answer with this error instead.
    Failed(SynthError),
    /// Audio was sent and the rest cannot follow: the body must be left unterminated.
    Cut,
    /// The client went away.
    Gone,
}

impl Gateway {
    /// Answers a streaming request from the synthesis it started or joined (`tap`), then waits
    /// for its production task to finish its bookkeeping.
    pub(super) async fn answer_stream(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        tap: Tap,
        key_hex: Option<String>,
        format: AudioFormat,
        task: &mut tokio::task::JoinHandle<Result<Synthesized, SynthError>>,
    ) -> Result<(), ApiError> {
        let mut headers = Vec::new();
        ctx.cache = match (&key_hex, tap.joined) {
            (None, _) => "BYPASS",
            (Some(_), false) => "MISS",
            (Some(_), true) => {
                ctx.tier = "inflight";
                headers.push(("X-Cache-Tier", "inflight".to_string()));
                headers.push(("Age", "0".to_string()));
                "HIT"
            }
        };
        headers.insert(0, ("X-Cache", ctx.cache.to_string()));
        if let Some(key) = key_hex {
            headers.push(("X-Cache-Key", key));
        }
        headers.extend(ctx.budget.iter().cloned());
        let head = StreamHead { headers };
        let streamed = self
            .stream_audio(session, ctx, tap.live.reader(), head, format)
            .await;
        if matches!(streamed, Streamed::Whole) {
            // The audio is complete; the task is finishing (store scheduled, audio counted).
            let _ = task.await;
        }
        settle(session, ctx, streamed)
    }

    /// Streams `reader`'s audio to the client in `format`. The headers go out with the first
    /// audio; until then nothing is written, so the caller can still answer an error.
    pub(super) async fn stream_audio(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut reader: LiveReader,
        head: StreamHead,
        format: AudioFormat,
    ) -> Streamed {
        // A PCM answer at another layout than the client's is converted whole at the end
        // (a resampler across chunk boundaries is not worth its state for this rare case).
        let mut pending: Option<(PcmFormat, BytesMut)> = None;
        let mut started = false;
        let mut sent_pcm: u64 = 0;
        let mut audio_format = None;
        loop {
            let next = tokio::select! {
                next = reader.next() => next,
                gone = session.as_downstream_mut().read_body_or_idle(true) => match gone {
                    Err(e) => {
                        info!("request {}: the client went away while streaming: {e}", ctx.request_id);
                        return Streamed::Gone;
                    }
                    Ok(_) => continue,
                },
            };
            let (pcm, pcm_format, degraded) = match next {
                Next::Audio {
                    pcm,
                    format,
                    degraded,
                } => (pcm, format, degraded),
                Next::Failed(e) => return Streamed::Failed(e),
                Next::Cut => {
                    warn!(
                        "request {}: the stream was cut after {} bytes of audio; ending it unterminated",
                        ctx.request_id,
                        reader.bytes_read()
                    );
                    return Streamed::Cut;
                }
                Next::End => {
                    if let Some((from, pcm)) = pending.take() {
                        let converted = convert(&pcm, from, format);
                        if !started {
                            if let Err(e) = self.start_stream(session, ctx, &head, format, None, None).await {
                                info!("request {}: client went away: {e}", ctx.request_id);
                                return Streamed::Gone;
                            }
                        }
                        if write_chunk(session, ctx, frame(format, &converted))
                            .await
                            .is_err()
                        {
                            return Streamed::Gone;
                        }
                    }
                    if let AudioFormat::OpenAiSse { .. } = format {
                        if write_chunk(session, ctx, sse_done()).await.is_err() {
                            return Streamed::Gone;
                        }
                    }
                    if let Err(e) = session.write_response_body(None, true).await {
                        info!("request {}: client went away at the end: {e}", ctx.request_id);
                        return Streamed::Gone;
                    }
                    ctx.audio_seconds = seconds(sent_pcm, audio_format);
                    return Streamed::Whole;
                }
            };
            sent_pcm += pcm.len() as u64;
            audio_format = Some(pcm_format);
            if let Some(sample_rate) = pcm_rate(format) {
                let native = pcm_format.sample_rate == sample_rate && pcm_format.channels == 1;
                if !native || pending.is_some() {
                    let buf = pending.get_or_insert_with(|| (pcm_format, BytesMut::new()));
                    buf.1.extend_from_slice(&pcm);
                    ctx.degraded = ctx.degraded.or(degraded);
                    continue;
                }
            }
            if !started {
                started = true;
                if let Err(e) = self
                    .start_stream(session, ctx, &head, format, Some(pcm_format), degraded)
                    .await
                {
                    info!("request {}: client went away: {e}", ctx.request_id);
                    return Streamed::Gone;
                }
            }
            if write_chunk(session, ctx, frame(format, &pcm)).await.is_err() {
                return Streamed::Gone;
            }
        }
    }

    /// Writes the streaming answer's headers (and the WAV header, for `Wav`).
    async fn start_stream(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        head: &StreamHead,
        format: AudioFormat,
        pcm_format: Option<PcmFormat>,
        degraded: Option<Degraded>,
    ) -> pingora::Result<()> {
        let content_type = match format {
            AudioFormat::Wav => "audio/wav",
            AudioFormat::Pcm { .. } => PCM_CONTENT_TYPE,
            AudioFormat::OpenAiSse { .. } => "text/event-stream",
        };
        let mut resp = ResponseHeader::build(200, Some(6 + head.headers.len()))?;
        resp.insert_header("Content-Type", content_type)?;
        if session.req_header().version == http::Version::HTTP_11 {
            resp.insert_header("Transfer-Encoding", "chunked")?;
        }
        resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        ctx.degraded = ctx.degraded.or(degraded);
        let approximate = match ctx.degraded {
            Some(Degraded::Approximate { key, .. }) => Some(key),
            _ => None,
        };
        for (name, value) in &head.headers {
            // An approximate answer is a hit on the entry that stood in (below).
            if approximate.is_some() && matches!(*name, "X-Cache" | "X-Cache-Tier" | "X-Cache-Key" | "Age") {
                continue;
            }
            resp.append_header(*name, value.as_str())?;
        }
        if let Some(key) = approximate {
            ctx.cache = "HIT";
            resp.insert_header("X-Cache", "HIT")?;
            resp.insert_header("X-Cache-Key", key.hex())?;
        }
        if let Some(degraded) = ctx.degraded {
            resp.insert_header("X-Degraded", degraded.kind())?;
            if approximate.is_some() {
                resp.insert_header("X-Degraded-Reason", degraded.reason())?;
            }
        }
        ctx.status = 200;
        crate::metrics::STREAM_FIRST_AUDIO
            .with_label_values(&[
                super::access_log::route(session.req_header().uri.path()),
                ctx.cache,
            ])
            .observe(ctx.started.elapsed().as_secs_f64() * 1000.0);
        session.write_response_header(Box::new(resp), false).await?;
        let wav_header = matches!(
            format,
            AudioFormat::Wav | AudioFormat::OpenAiSse { pcm_rate: None }
        );
        if let (true, Some(f)) = (wav_header, pcm_format) {
            let header = frame(format, &wav::pcm16_header(f.sample_rate, f.channels, None));
            ctx.bytes_out += header.len() as u64;
            session.write_response_body(Some(header), false).await?;
        }
        Ok(())
    }

    /// Streams a complete answer (a cache hit, or a synthesis whose audio is already whole) in
    /// the streaming framing.
    pub(super) async fn stream_whole(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        answer: &Synthesized,
        head: StreamHead,
        format: AudioFormat,
    ) -> Streamed {
        let live = crate::synth::LiveAudio::new();
        live.finish(&answer.wav, answer.degradation());
        self.stream_audio(session, ctx, live.reader(), head, format).await
    }
}

/// What the route returns once a stream ended: an error to answer when nothing was sent; a cut
/// stream marks the exchange so it ends without its terminating chunk (`RequestCtx::cut`).
pub(super) fn settle(
    session: &mut Session,
    ctx: &mut RequestCtx,
    streamed: Streamed,
) -> Result<(), ApiError> {
    match streamed {
        Streamed::Whole => Ok(()),
        Streamed::Failed(e) => Err(e.into()),
        Streamed::Cut => {
            ctx.cut = true;
            ctx.code = "stream_cut";
            session.set_keepalive(None);
            Ok(())
        }
        Streamed::Gone => {
            if ctx.status == 0 {
                ctx.status = 499;
            }
            Ok(())
        }
    }
}

async fn write_chunk(session: &mut Session, ctx: &mut RequestCtx, pcm: Bytes) -> Result<(), ()> {
    let len = pcm.len() as u64;
    match session.write_response_body(Some(pcm), false).await {
        Ok(()) => {
            ctx.bytes_out += len;
            Ok(())
        }
        Err(e) => {
            info!(
                "request {}: the client went away while streaming: {e}",
                ctx.request_id
            );
            Err(())
        }
    }
}

/// The rate of raw PCM the client asked for, if it asked for raw PCM.
fn pcm_rate(format: AudioFormat) -> Option<u32> {
    match format {
        AudioFormat::Pcm { sample_rate } => Some(sample_rate),
        AudioFormat::OpenAiSse { pcm_rate } => pcm_rate,
        AudioFormat::Wav => None,
    }
}

/// Bytes of audio as they go on the wire: as they are, or in an SSE delta event.
fn frame(format: AudioFormat, audio: &[u8]) -> Bytes {
    match format {
        AudioFormat::OpenAiSse { .. } => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(audio);
            let event = serde_json::json!({"type": "speech.audio.delta", "audio": b64});
            Bytes::from(format!("data: {event}\n\n"))
        }
        AudioFormat::Wav | AudioFormat::Pcm { .. } => Bytes::copy_from_slice(audio),
    }
}

/// OpenAI's last SSE event (cosygate counts no tokens: usage is zero).
fn sse_done() -> Bytes {
    let done = serde_json::json!({"type": "speech.audio.done",
        "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}});
    Bytes::from(format!("data: {done}\n\n"))
}

/// PCM of `from`'s layout as the client's `format` (mono at its rate), through a WAV.
fn convert(pcm: &[u8], from: PcmFormat, format: AudioFormat) -> Bytes {
    let Some(sample_rate) = pcm_rate(format) else {
        return Bytes::copy_from_slice(pcm);
    };
    let len = u32::try_from(pcm.len()).unwrap_or(u32::MAX);
    let mut wav_bytes = wav::pcm16_header(from.sample_rate, from.channels, Some(len)).to_vec();
    wav_bytes.extend_from_slice(pcm);
    wav::to_pcm16_mono(&wav_bytes, sample_rate).map_or_else(|_| Bytes::new(), Bytes::from)
}

/// Seconds of 16-bit PCM.
fn seconds(bytes: u64, format: Option<PcmFormat>) -> f64 {
    format.map_or(0.0, |f| {
        bytes as f64 / (2.0 * f64::from(f.channels.max(1)) * f64::from(f.sample_rate.max(1)))
    })
}
