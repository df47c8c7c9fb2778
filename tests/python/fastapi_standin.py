"""A stand-in for CosyVoice's FastAPI server (runtime/python/fastapi/server.py), written here
from what is known of it (see /work/shared/facts.md, "CosyVoice"), with a fake CosyVoice3
model instead of the real one. tests/fastapi_fidelity.rs sends the same requests to it and to
cosyvoice-sim and compares what a client sees.

Same surface as upstream: every route is registered for GET and POST, its parameters are
FastAPI Form()/File() fields (read from the body whatever the method), the answer is a
StreamingResponse (no media type) of raw int16 PCM, one chunk per text segment, produced by
the model's generator, so a failure inside the model is a 200 whose body is cut (uvicorn closes
the connection without the last chunk). Starlette's multipart parser refuses a string part
over 1 MiB with 400 (starlette 0.41's MultiPartParser.max_part_size).

Usage: python fastapi_standin.py --port PORT [--speakers a,b] [--upstream-bug tensor]
"""

import argparse
import hashlib
import io
import struct
import wave

import uvicorn
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import StreamingResponse

ENDOFPROMPT = "<|endofprompt|>"
SAMPLE_RATE = 24000
SEGMENT_MIN_UNITS, SEGMENT_MAX_UNITS, SEGMENT_MERGE_UNITS = 60, 80, 20
SENTENCE_ENDS = set(".!?。！？;；\n…")


def is_cjk(c):
    o = ord(c)
    return (0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF
            or 0xAC00 <= o <= 0xD7AF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF)


def units(text):
    n, in_word = 0, False
    for c in text:
        if is_cjk(c):
            n, in_word = n + 1, False
        elif c.isalnum():
            n, in_word = (n if in_word else n + 1), True
        else:
            in_word = False
    return n


def text_normalize(text):
    """The fake frontend's split: the spoken part cut into sentences, grouped by size."""
    spoken = text.rsplit(ENDOFPROMPT, 1)[-1]
    sentences, current = [], ""
    for i, c in enumerate(spoken):
        current += c
        nxt = spoken[i + 1] if i + 1 < len(spoken) else ""
        if c in SENTENCE_ENDS and nxt not in SENTENCE_ENDS:
            sentences.append(current)
            current = ""
    sentences.append(current)
    groups = []
    for s in sentences:
        if not any(c.isalnum() for c in s):
            continue
        if groups and groups[-1][1] < SEGMENT_MIN_UNITS and groups[-1][1] + units(s) <= SEGMENT_MAX_UNITS:
            groups[-1] = (groups[-1][0] + s, groups[-1][1] + units(s))
        else:
            groups.append((s, units(s)))
    if len(groups) > 1 and groups[-1][1] < SEGMENT_MERGE_UNITS:
        last = groups.pop()
        groups[-1] = (groups[-1][0] + last[0], groups[-1][1] + last[1])
    return [g[0].strip() for g in groups]


class FakeCosyVoice3:
    """Deterministic fake audio; fails where the real model fails, inside the generator."""

    def __init__(self, speakers):
        self.spk2info = {s: None for s in speakers}

    @staticmethod
    def _pcm(segment, voice):
        secs = sum(0.25 if is_cjk(c) else 0.07 for c in segment if c.isalnum())
        frames = round(secs * SAMPLE_RATE)
        seed = hashlib.sha256(voice + segment.encode()).digest()
        block = b"".join(struct.pack("<h", (b - 128) * 64) for b in seed)
        return (block * (frames * 2 // len(block) + 1))[: frames * 2]

    @staticmethod
    def _frontend_prompt(prompt_wav):
        # The current frontend loads the prompt file itself; a decoded tensor breaks it.
        if not hasattr(prompt_wav, "read"):
            raise AttributeError("'Tensor' object has no attribute 'read'")
        prompt_wav.seek(0)
        with wave.open(io.BytesIO(prompt_wav.read())) as w:
            secs = w.getnframes() / w.getframerate()
        assert secs <= 30, "do not support extract speech token for audio longer than 30s"
        prompt_wav.seek(0)
        return hashlib.sha256(prompt_wav.read()).digest()

    def _check_marker(self, prompt_text, tts_text):
        assert ENDOFPROMPT in prompt_text + tts_text, f"{ENDOFPROMPT} not found in prompt_text + tts_text"

    def inference_sft(self, tts_text, spk_id):
        for segment in text_normalize(tts_text):
            _ = self.spk2info[spk_id]  # KeyError: CosyVoice3 ships no preset speaker
            yield self._pcm(segment, spk_id.encode())

    def inference_zero_shot(self, tts_text, prompt_text, prompt_wav):
        for segment in text_normalize(tts_text):
            voice = self._frontend_prompt(prompt_wav)
            self._check_marker(prompt_text, tts_text)
            yield self._pcm(segment, voice)

    def inference_cross_lingual(self, tts_text, prompt_wav):
        for segment in text_normalize(tts_text):
            voice = self._frontend_prompt(prompt_wav)
            self._check_marker("", tts_text)
            yield self._pcm(segment, voice)

    def inference_instruct(self, tts_text, spk_id, instruct_text):
        for _ in text_normalize(tts_text):
            raise NotImplementedError("inference_instruct is only implemented for CosyVoice!")
            yield b""  # pragma: no cover (a generator)

    def inference_instruct2(self, tts_text, instruct_text, prompt_wav):
        for segment in text_normalize(tts_text):
            voice = self._frontend_prompt(prompt_wav)
            self._check_marker(instruct_text, tts_text)
            yield self._pcm(segment, voice)


def load_wav(file, min_sr):
    """What the route does before streaming: decode the upload (errors are a plain 500)."""
    file.seek(0)
    with wave.open(io.BytesIO(file.read())) as w:
        assert w.getframerate() >= min_sr, f"wav sample rate {w.getframerate()} must be greater than {min_sr}"
        samples = w.readframes(w.getnframes())
    file.seek(0)
    return samples


def make_app(model, tensor_bug):
    app = FastAPI()

    def prompt_for_model(upload):
        decoded = load_wav(upload.file, 16000)
        # Upstream's bug hands the model the decoded audio; the operators' fix, the file.
        return decoded if tensor_bug else io.BytesIO(upload.file.read())

    def stream(chunks):
        return StreamingResponse(chunks)

    @app.get("/inference_sft")
    @app.post("/inference_sft")
    async def inference_sft(tts_text: str = Form(), spk_id: str = Form()):
        return stream(model.inference_sft(tts_text, spk_id))

    @app.get("/inference_zero_shot")
    @app.post("/inference_zero_shot")
    async def inference_zero_shot(tts_text: str = Form(), prompt_text: str = Form(),
                                  prompt_wav: UploadFile = File()):
        prompt = prompt_for_model(prompt_wav)
        return stream(model.inference_zero_shot(tts_text, prompt_text, prompt))

    @app.get("/inference_cross_lingual")
    @app.post("/inference_cross_lingual")
    async def inference_cross_lingual(tts_text: str = Form(), prompt_wav: UploadFile = File()):
        prompt = prompt_for_model(prompt_wav)
        return stream(model.inference_cross_lingual(tts_text, prompt))

    @app.get("/inference_instruct")
    @app.post("/inference_instruct")
    async def inference_instruct(tts_text: str = Form(), spk_id: str = Form(), instruct_text: str = Form()):
        return stream(model.inference_instruct(tts_text, spk_id, instruct_text))

    @app.get("/inference_instruct2")
    @app.post("/inference_instruct2")
    async def inference_instruct2(tts_text: str = Form(), instruct_text: str = Form(),
                                  prompt_wav: UploadFile = File()):
        prompt = prompt_for_model(prompt_wav)
        return stream(model.inference_instruct2(tts_text, instruct_text, prompt))

    return app


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--speakers", default="")
    parser.add_argument("--upstream-bug", choices=["tensor"])
    args = parser.parse_args()
    speakers = [s for s in args.speakers.split(",") if s]
    app = make_app(FakeCosyVoice3(speakers), args.upstream_bug == "tensor")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
