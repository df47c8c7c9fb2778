//! What a pool's model is known to fail on, refused before any cache or backend work (422).
//! CosyVoice reports these failures only inside a 200 stream (cut, or empty), where they look
//! like a broken backend; refusing them here keeps one client from opening every breaker.

use crate::api::{wav, GenerateRequest, Mode};
use crate::config::{ModelFamily, PoolConf, Protocol};
use crate::synth::Refusal;

/// Longest prompt audio CosyVoice 2 and 3 accept, in seconds (their frontend refuses more).
pub const MODEL_MAX_PROMPT_SECONDS: f64 = 30.0;

/// Refuses what `pool`'s backends cannot synthesize: `sft` without a known speaker, a text with
/// nothing to speak, prompt audio the model does not accept, zero_shot without a transcript.
/// Runs once per request, after validation, before the cache.
pub fn check(pool_name: &str, pool: &PoolConf, req: &GenerateRequest) -> Result<(), Refusal> {
    if !req.text.chars().any(char::is_alphanumeric) {
        return Err(Refusal::new(
            "nothing_to_speak",
            "`text` has no letter or digit in any script, so the model has nothing to say: send words",
        ));
    }
    if req.mode == Mode::Sft && pool.protocol == Protocol::Triton {
        return Err(super::triton::sft_refusal(pool_name));
    }
    if req.mode == Mode::Sft {
        let spk = req.spk_id.as_deref().unwrap_or("");
        match &pool.speakers {
            None if pool.model == ModelFamily::Cosyvoice3 => {
                return Err(Refusal::new(
                    "sft_unavailable",
                    format!(
                        "pool {pool_name} serves CosyVoice3, which has no preset speakers: use \
                         zero_shot or cross_lingual with prompt audio (or ask the operator to list \
                         the pool's speakers)"
                    ),
                ));
            }
            Some(list) if !list.iter().any(|s| s == spk) => {
                let shown: String = spk.chars().take(64).collect();
                return Err(Refusal::new(
                    "unknown_speaker",
                    format!(
                        "spk_id {shown:?} is not a speaker of pool {pool_name}; its speakers are: {}",
                        list.join(", ")
                    ),
                ));
            }
            _ => {}
        }
    }
    if req.mode == Mode::ZeroShot && req.prompt_text.is_none() {
        return Err(Refusal::new(
            "missing_prompt_text",
            "zero_shot needs `prompt_text`, the transcript of the prompt audio: send it, or use \
             cross_lingual when you have no transcript",
        ));
    }
    if let Some(audio) = &req.prompt_audio {
        let secs = wav::parse_wav(audio).map(|i| i.duration_secs()).unwrap_or(0.0);
        if secs > MODEL_MAX_PROMPT_SECONDS {
            return Err(Refusal::new(
                "prompt_too_long",
                format!(
                    "prompt audio lasts {secs:.2} s; CosyVoice accepts at most {MODEL_MAX_PROMPT_SECONDS} s \
                     (3 to 10 s of clean speech works best)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RequestLimits;

    fn pool(extra: &str) -> PoolConf {
        let yaml = format!("protocol: cosyvoice_fastapi\n{extra}backends: [ {{ addr: 127.0.0.1:1 }} ]\n");
        serde_yaml::from_str(&yaml).expect("pool yaml")
    }

    fn req(json: &str) -> GenerateRequest {
        let limits = RequestLimits {
            max_text_chars: 200,
            max_prompt_seconds: 600.0,
        };
        GenerateRequest::parse(json.as_bytes(), limits).expect("valid request")
    }

    fn code(pool: &PoolConf, r: &GenerateRequest) -> Option<&'static str> {
        check("p", pool, r).err().map(|e| e.code)
    }

    #[test]
    fn sft_needs_a_listed_speaker_on_cosyvoice3() {
        let sft = req(r#"{"text":"Hi.","mode":"sft","spk_id":"A"}"#);
        assert_eq!(code(&pool(""), &sft), Some("sft_unavailable"));
        assert_eq!(code(&pool("speakers: [A, B]\n"), &sft), None);
        assert_eq!(code(&pool("speakers: [B]\n"), &sft), Some("unknown_speaker"));
        assert_eq!(
            code(&pool("model: cosyvoice2\n"), &sft),
            None,
            "CosyVoice2 has presets"
        );
        assert_eq!(
            code(&pool("model: cosyvoice2\nspeakers: [B]\n"), &sft),
            Some("unknown_speaker")
        );
    }

    #[test]
    fn texts_without_letters_or_digits_are_refused_in_any_script() {
        let p = pool("model: cosyvoice2\n");
        for text in ["...", "?!", "—", "🙂🙂", "。，"] {
            let r = req(&format!(r#"{{"text":"{text}","mode":"sft","spk_id":"A"}}"#));
            assert_eq!(code(&p, &r), Some("nothing_to_speak"), "{text}");
        }
        for text in ["7", "中", "é!", "ß", "日本"] {
            let r = req(&format!(r#"{{"text":"{text}","mode":"sft","spk_id":"A"}}"#));
            assert_eq!(code(&p, &r), None, "{text}");
        }
    }

    fn wav_b64(secs: f64) -> String {
        use base64::Engine;
        let frames = (secs * 16000.0) as usize;
        let pcm = vec![0u8; frames * 2];
        let wav = wav::pcm16_to_wav(&pcm, 16000).expect("wav");
        base64::engine::general_purpose::STANDARD.encode(wav)
    }

    #[test]
    fn zero_shot_needs_its_transcript_and_prompts_stay_within_30_s() {
        let p = pool("");
        let b64 = wav_b64(1.0);
        let no_transcript = req(&format!(r#"{{"text":"Hi.","prompt_audio":"{b64}"}}"#));
        assert_eq!(code(&p, &no_transcript), Some("missing_prompt_text"));
        let cross = req(&format!(
            r#"{{"text":"Hi.","mode":"cross_lingual","prompt_audio":"{b64}"}}"#
        ));
        assert_eq!(code(&p, &cross), None);
        let long = wav_b64(31.0);
        let too_long = req(&format!(
            r#"{{"text":"Hi.","mode":"cross_lingual","prompt_audio":"{long}"}}"#
        ));
        assert_eq!(code(&p, &too_long), Some("prompt_too_long"));
    }
}
