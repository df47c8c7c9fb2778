//! Audio as it is produced: [`LiveAudio`] is one synthesis's growing PCM, written by the
//! attempt that is producing it and read by every streaming caller of that synthesis (the one
//! that started it and any identical request that joined it), each from the first byte.
//!
//! - A backend that streams (CosyVoice's FastAPI server sends raw PCM as it is synthesized)
//!   pushes each chunk as it arrives; the others (a complete WAV, Gradio, Triton, the fallback
//!   voice) publish their audio whole when the synthesis ends ([`LiveAudio::finish`]).
//! - An attempt that fails after pushing audio is followed by a new *take* of the audio
//!   ([`LiveAudio::retake`]): readers that had not read any of it yet read the new take as if
//!   nothing happened; readers that had read some of it are told the stream was cut
//!   ([`Next::Cut`]): their audio cannot continue seamlessly from another take.
//! - Bounded: only the current take is held, and an attempt's audio is capped by the pool's
//!   `max_audio_seconds` before it is pushed here.

use super::{Degraded, SynthError};
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::Notify;

/// The layout of the PCM a take carries: signed 16-bit little-endian samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmFormat {
    pub sample_rate: u32,
    pub channels: u16,
}

/// How a synthesis ended, as its readers see it.
#[derive(Debug, Clone)]
enum End {
    Complete,
    Failed(SynthError),
}

#[derive(Debug, Default)]
struct Take {
    number: u64,
    format: Option<PcmFormat>,
    /// From the fallback voice, or a cached entry standing in.
    degraded: Option<Degraded>,
    chunks: Vec<Bytes>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    take: Take,
    end: Option<End>,
}

/// One synthesis's audio so far (see the module's doc).
#[derive(Debug, Default)]
pub struct LiveAudio {
    state: Mutex<State>,
    changed: Notify,
}

/// What a reader gets next.
#[derive(Debug)]
pub enum Next {
    /// More audio, in `format`; `degraded` when it is the fallback voice's or an approximate
    /// cached answer's.
    Audio {
        pcm: Bytes,
        format: PcmFormat,
        degraded: Option<Degraded>,
    },
    /// The synthesis ended whole: every byte has been read.
    End,
    /// The synthesis failed before this reader read anything: answer with the error.
    Failed(SynthError),
    /// The audio this reader had started to read was abandoned (the backend cut it, or the
    /// synthesis failed after it): the stream cannot be completed.
    Cut,
}

impl LiveAudio {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Appends PCM to the current take (an attempt's chunk as it arrives).
    pub fn push(&self, format: PcmFormat, pcm: Bytes) {
        if pcm.is_empty() {
            return;
        }
        {
            let mut s = self.state.lock();
            if s.end.is_some() {
                return;
            }
            s.take.format.get_or_insert(format);
            s.take.bytes += pcm.len();
            s.take.chunks.push(pcm);
        }
        self.changed.notify_waiters();
    }

    /// Starts a new take before another attempt (or the fallback voice), dropping the audio of
    /// the last one if it pushed any.
    pub fn retake(&self) {
        {
            let mut s = self.state.lock();
            if s.take.bytes == 0 || s.end.is_some() {
                return;
            }
            s.take = Take {
                number: s.take.number + 1,
                ..Take::default()
            };
        }
        self.changed.notify_waiters();
    }

    /// Ends the synthesis with its complete answer: a take that streamed its PCM already just
    /// ends; otherwise the WAV's samples are published now, as one chunk. A second end is
    /// ignored.
    pub fn finish(&self, wav: &[u8], degraded: Option<Degraded>) {
        {
            let mut s = self.state.lock();
            if s.end.is_some() {
                return;
            }
            if s.take.bytes == 0 {
                match whole_pcm(wav) {
                    Some((format, pcm)) => {
                        s.take.format = Some(format);
                        s.take.degraded = degraded;
                        s.take.bytes = pcm.len();
                        s.take.chunks.push(pcm);
                        s.end = Some(End::Complete);
                    }
                    None => {
                        s.end = Some(End::Failed(SynthError::Internal(
                            "the answer's audio could not be read for streaming".into(),
                        )))
                    }
                }
            } else {
                s.end = Some(End::Complete);
            }
        }
        self.changed.notify_waiters();
    }

    /// Ends the synthesis with its error. Ignored after an end.
    pub fn fail(&self, e: SynthError) {
        {
            let mut s = self.state.lock();
            if s.end.is_some() {
                return;
            }
            s.end = Some(End::Failed(e));
        }
        self.changed.notify_waiters();
    }

    /// Every byte of the current take, in one piece (an attempt's whole body, once it is done).
    pub fn current_take(&self) -> Bytes {
        let s = self.state.lock();
        match s.take.chunks.as_slice() {
            [one] => one.clone(),
            chunks => Bytes::from(chunks.concat()),
        }
    }

    /// A reader from the first byte of the current take.
    pub fn reader(self: &Arc<Self>) -> LiveReader {
        LiveReader {
            live: self.clone(),
            take: self.state.lock().take.number,
            index: 0,
            read: 0,
        }
    }
}

/// The PCM of a complete WAV as a take: 16-bit PCM as is (its data chunk, no copy of the
/// samples' meaning), anything else converted to 16-bit mono.
fn whole_pcm(wav: &[u8]) -> Option<(PcmFormat, Bytes)> {
    let info = crate::api::wav::header_info(wav).ok()?;
    if info.bits_per_sample == 16 {
        let range = crate::api::wav::data_range(wav)?;
        let format = PcmFormat {
            sample_rate: info.sample_rate,
            channels: info.channels,
        };
        return Some((format, Bytes::copy_from_slice(&wav[range])));
    }
    let pcm = crate::api::wav::to_pcm16_mono(wav, info.sample_rate).ok()?;
    let format = PcmFormat {
        sample_rate: info.sample_rate,
        channels: 1,
    };
    Some((format, Bytes::from(pcm)))
}

/// One caller's position in a [`LiveAudio`].
#[derive(Debug)]
pub struct LiveReader {
    live: Arc<LiveAudio>,
    take: u64,
    index: usize,
    /// Bytes of audio this reader has returned.
    read: usize,
}

impl LiveReader {
    /// The next piece of audio, waiting for it if none is there yet; `End`, `Failed` and
    /// `Cut` are final.
    pub async fn next(&mut self) -> Next {
        loop {
            let notified = self.live.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.live.state.lock();
                if s.take.number != self.take {
                    if self.read > 0 {
                        return Next::Cut;
                    }
                    self.take = s.take.number;
                    self.index = 0;
                }
                if let Some(pcm) = s.take.chunks.get(self.index) {
                    self.index += 1;
                    self.read += pcm.len();
                    return Next::Audio {
                        pcm: pcm.clone(),
                        format: s.take.format.unwrap_or(PcmFormat {
                            sample_rate: 24000,
                            channels: 1,
                        }),
                        degraded: s.take.degraded,
                    };
                }
                match &s.end {
                    Some(End::Complete) => return Next::End,
                    Some(End::Failed(_)) if self.read > 0 => return Next::Cut,
                    Some(End::Failed(e)) => return Next::Failed(e.clone()),
                    None => {}
                }
            }
            notified.await;
        }
    }

    /// Bytes of audio returned so far.
    pub fn bytes_read(&self) -> usize {
        self.read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: PcmFormat = PcmFormat {
        sample_rate: 24000,
        channels: 1,
    };

    #[tokio::test]
    async fn readers_get_every_chunk_from_the_first_wherever_they_join() {
        let live = LiveAudio::new();
        let mut early = live.reader();
        live.push(F, Bytes::from_static(b"ab"));
        let mut late = live.reader();
        live.push(F, Bytes::from_static(b"cd"));
        live.finish(b"", None);
        for reader in [&mut early, &mut late] {
            let mut got = Vec::new();
            loop {
                match reader.next().await {
                    Next::Audio { pcm, .. } => got.extend_from_slice(&pcm),
                    Next::End => break,
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(got, b"abcd");
        }
    }

    #[tokio::test]
    async fn a_retake_cuts_readers_that_started_and_is_seamless_for_the_others() {
        let live = LiveAudio::new();
        let mut started = live.reader();
        let mut waiting = live.reader();
        live.push(F, Bytes::from_static(b"xx"));
        assert!(matches!(started.next().await, Next::Audio { .. }));
        live.retake();
        live.push(F, Bytes::from_static(b"yy"));
        live.finish(b"", None);
        assert!(matches!(started.next().await, Next::Cut));
        match waiting.next().await {
            Next::Audio { pcm, .. } => assert_eq!(&pcm[..], b"yy"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(waiting.next().await, Next::End));
    }

    #[tokio::test]
    async fn a_whole_answer_is_published_at_the_end_and_a_failure_reaches_waiting_readers() {
        let live = LiveAudio::new();
        let mut reader = live.reader();
        let pcm: Vec<u8> = (0..100i16).flat_map(i16::to_le_bytes).collect();
        let wav = crate::api::wav::pcm16_to_wav(&pcm, 22050).expect("wav");
        let waiter = tokio::spawn(async move { reader.next().await });
        tokio::task::yield_now().await;
        live.finish(&wav, Some(Degraded::Fallback));
        match waiter.await.expect("task") {
            Next::Audio {
                pcm: got,
                format,
                degraded,
            } => {
                assert_eq!(&got[..], &pcm[..]);
                assert_eq!(format.sample_rate, 22050);
                assert_eq!(degraded, Some(Degraded::Fallback));
            }
            other => panic!("{other:?}"),
        }
        let failed = LiveAudio::new();
        let mut reader = failed.reader();
        failed.fail(SynthError::NoAudio);
        assert!(matches!(reader.next().await, Next::Failed(SynthError::NoAudio)));
    }
}
