"""A stand-in for CosyVoice's own FastAPI client (runtime/python/fastapi/client.py), written
here: the same command-line flags and the same HTTP requests, so that tests/cosyvoice_dropin.rs
can show that a client written for CosyVoice's server works unchanged through cosygate.

Like upstream's client it sends every mode as GET with the fields in the body (`data=`; with
`files=` the body is multipart/form-data, without it urlencoded), reads the answer with
`stream=True` and `iter_content(chunk_size=16000)`, and takes the bytes as int16 mono PCM. It
writes them to --tts_wav as a WAV at --sample_rate (the `wave` module) or, when the name ends in
`.pcm`, as the raw bytes. Unlike upstream's it exits 1 on a non-200 answer (upstream saves
whatever arrived), so a test sees a refusal. Only `requests` and the standard library.

Modes: sft, zero_shot, cross_lingual, instruct (CosyVoice1's /inference_instruct, as upstream),
and instruct2 (tts_text, instruct_text and the prompt file, for CosyVoice2 and 3).
"""

import argparse
import logging
import sys
import wave

import requests


def request(args):
    url = "http://{}:{}/inference_{}".format(args.host, args.port, args.mode)
    files = None
    if args.mode == "sft":
        payload = {"tts_text": args.tts_text, "spk_id": args.spk_id}
    elif args.mode == "zero_shot":
        payload = {"tts_text": args.tts_text, "prompt_text": args.prompt_text}
        files = [("prompt_wav", ("prompt_wav", open(args.prompt_wav, "rb"), "application/octet-stream"))]
    elif args.mode == "cross_lingual":
        payload = {"tts_text": args.tts_text}
        files = [("prompt_wav", ("prompt_wav", open(args.prompt_wav, "rb"), "application/octet-stream"))]
    elif args.mode == "instruct2":
        payload = {"tts_text": args.tts_text, "instruct_text": args.instruct_text}
        files = [("prompt_wav", ("prompt_wav", open(args.prompt_wav, "rb"), "application/octet-stream"))]
    else:
        payload = {"tts_text": args.tts_text, "spk_id": args.spk_id, "instruct_text": args.instruct_text}
    try:
        response = requests.request("GET", url, data=payload, files=files, stream=True, timeout=60)
    finally:
        for _, (_, handle, _) in files or []:
            handle.close()
    audio = b""
    for chunk in response.iter_content(chunk_size=16000):
        audio += chunk
    return response.status_code, audio


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", type=str, default="0.0.0.0")
    parser.add_argument("--port", type=int, default=50000)
    parser.add_argument(
        "--mode", default="sft", choices=["sft", "zero_shot", "cross_lingual", "instruct", "instruct2"]
    )
    parser.add_argument("--tts_text", type=str, default="Hello, I am a speech synthesis model. How can I help you?")
    parser.add_argument("--prompt_text", type=str, default="You are a helpful assistant.<|endofprompt|>I hope you will do even better than me.")
    parser.add_argument("--prompt_wav", type=str, default="zero_shot_prompt.wav")
    parser.add_argument("--instruct_text", type=str, default="You are a helpful assistant. Speak calmly and slowly.<|endofprompt|>")
    parser.add_argument("--spk_id", type=str, default="中文女")
    parser.add_argument("--tts_wav", type=str, default="demo.wav")
    parser.add_argument("--sample_rate", type=int, default=24000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    status, audio = request(args)
    if status != 200:
        logging.error("HTTP %s: %s", status, audio[:300].decode("utf-8", "replace"))
        return 1
    if len(audio) % 2:
        logging.error("the answer is %d bytes, not whole int16 samples", len(audio))
        return 1
    if args.tts_wav.endswith(".pcm"):
        with open(args.tts_wav, "wb") as f:
            f.write(audio)
    else:
        with wave.open(args.tts_wav, "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(args.sample_rate)
            f.writeframes(audio)
    logging.info("%d samples written to %s", len(audio) // 2, args.tts_wav)
    return 0


if __name__ == "__main__":
    sys.exit(main())
