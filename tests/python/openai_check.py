"""Drives cosygate's OpenAI routes with OpenAI's own Python library (tests/openai.rs runs it).

Usage: openai_check.py BASE_URL API_KEY MODEL VOICE OUT_DIR MODE
  MODE "main":      a WAV, raw PCM, a streamed answer, OpenAI's speech events (SSE), the
                    model list, and three refusals
                    (mp3, an unknown voice, an unknown model) as the library reports them.
  MODE "ratelimit": two requests against a bucket of one: the second is a RateLimitError.
Audio goes to OUT_DIR (speech.wav, speech.pcm, streamed.wav, sse.pcm); one JSON object with what the
library saw goes to stdout for the Rust test to check.
"""

import base64
import json
import sys

import openai

TEXT = "The OpenAI client speaks through cosygate."


def refusal(call):
    """Runs `call`, which must fail with an APIStatusError; returns what the library saw."""
    try:
        call()
    except openai.APIStatusError as e:
        return {
            "class": type(e).__name__,
            "status": e.status_code,
            "code": e.code,
            "param": e.param,
            "type": e.type,
            "message": e.message,
            "body": e.body,
            "retry_after": e.response.headers.get("retry-after"),
        }
    raise SystemExit("the call succeeded but a refusal was expected")


def main():
    base_url, api_key, model, voice, out_dir, mode = sys.argv[1:7]
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
    seen = {}
    if mode == "main":
        speech = client.audio.speech.create(model=model, voice=voice, input=TEXT, response_format="wav")
        speech.write_to_file(f"{out_dir}/speech.wav")
        pcm = client.audio.speech.create(model=model, voice=voice, input=TEXT, response_format="pcm")
        pcm.write_to_file(f"{out_dir}/speech.pcm")
        with client.audio.speech.with_streaming_response.create(
            model=model, voice=voice, input=TEXT, response_format="wav", stream_format="audio"
        ) as resp:
            with open(f"{out_dir}/streamed.wav", "wb") as f:
                for chunk in resp.iter_bytes():
                    f.write(chunk)
        with client.audio.speech.with_streaming_response.create(
            model=model, voice=voice, input=TEXT, response_format="pcm", stream_format="sse"
        ) as resp:
            seen["sse_content_type"] = resp.headers.get("content-type")
            events = [json.loads(line[len("data: "):]) for line in resp.iter_lines() if line.startswith("data: ")]
        seen["sse_types"] = [e["type"] for e in events]
        with open(f"{out_dir}/sse.pcm", "wb") as f:
            for e in events:
                if e["type"] == "speech.audio.delta":
                    f.write(base64.b64decode(e["audio"]))
        seen["models"] = [m.id for m in client.models.list()]
        seen["model"] = client.models.retrieve(model).id
        seen["mp3"] = refusal(
            lambda: client.audio.speech.create(model=model, voice=voice, input=TEXT, response_format="mp3")
        )
        seen["unknown_voice"] = refusal(
            lambda: client.audio.speech.create(model=model, voice="no-such-voice", input=TEXT)
        )
        seen["unknown_model"] = refusal(
            lambda: client.audio.speech.create(model="tts-1", voice=voice, input=TEXT)
        )
    elif mode == "ratelimit":
        client.audio.speech.create(model=model, voice=voice, input=TEXT, response_format="wav")
        seen["limited"] = refusal(
            lambda: client.audio.speech.create(model=model, voice=voice, input=TEXT, response_format="wav")
        )
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
