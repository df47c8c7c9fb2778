"""Drives a CosyVoice WebUI API (the sim's `--serve gradio`, or a real webui.py) with the real
`gradio_client`: reads its API (`view_api`), synthesizes sft and zero_shot through
`predict(..., api_name="/generate_audio")` (the prompt WAV uploaded by the client itself), and
checks that audio comes back. Prints one JSON line with what it saw; exits non-zero on failure.

Usage: gradio_check.py URL SPEAKER PROMPT_WAV
"""

import json
import sys
import urllib.request
import wave

from gradio_client import Client, handle_file

MARK = "You are a helpful assistant.<|endofprompt|>"


def wav_info(data: bytes) -> dict:
    import io

    with wave.open(io.BytesIO(data), "rb") as w:
        return {"rate": w.getframerate(), "channels": w.getnchannels(), "frames": w.getnframes()}


def main() -> int:
    url, speaker, prompt_wav = sys.argv[1], sys.argv[2], sys.argv[3]
    client = Client(url, verbose=False, download_files=False)
    api = client.view_api(print_info=False, return_format="dict")
    params = [p["parameter_name"] for p in api["named_endpoints"]["/generate_audio"]["parameters"]]
    assert params == [
        "tts_text", "mode_checkbox_group", "sft_dropdown", "prompt_text", "prompt_wav_upload",
        "prompt_wav_record", "instruct_text", "seed", "stream", "speed",
    ], params
    seen = {"parameters": params}
    calls = {
        "sft": [MARK + "Hello from the client.", "预训练音色", speaker, "", None, None, "", 0, False, 1.0],
        "zero_shot": [
            "Hello from the client.", "3s极速复刻", speaker, MARK + "A prompt transcript.",
            handle_file(prompt_wav), None, "", 0, True, 1.0,
        ],
    }
    for name, args in calls.items():
        out = client.predict(*args, api_name="/generate_audio")
        # download_files=False: the output's FileData as the server sent it.
        assert isinstance(out, dict) and "path" in out, f"{name}: predict returned {out!r}"
        path = out["path"]
        if out.get("is_stream"):
            # Gradio 5.4 names a stream by its playlist, `<session>/<run>/<id>/playlist.m3u8`;
            # the joined audio is beside it.
            stream_dir = path.removesuffix("/playlist.m3u8")
            audio_url = f"{url}/gradio_api/stream/{stream_dir}/playlist-file"
        else:
            audio_url = f"{url}/gradio_api/file={path}"
        with urllib.request.urlopen(audio_url, timeout=10) as resp:
            data = resp.read()
        assert data.startswith(b"RIFF"), f"{name}: {audio_url} is not a WAV: {data[:16]!r}"
        info = wav_info(data)
        assert info["frames"] > 0, f"{name}: empty audio"
        seen[name] = {"is_stream": bool(out.get("is_stream")), "path": path, **info}
    # A refused input (zero_shot without prompt audio) gives no audio rather than an error.
    out = client.predict("Hi.", "3s极速复刻", speaker, MARK + "x", None, None, "", 0, False, 1.0, api_name="/generate_audio")
    seen["refused_input"] = out
    assert out is None, f"zero_shot without a prompt returned {out!r}"
    client.close()
    print(json.dumps(seen, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
