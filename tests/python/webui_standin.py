"""A stand-in for CosyVoice's webui.py on the real Gradio 5.4.0: the same ten Blocks inputs,
streaming Audio output, api name (`/generate_audio`) and queue (max_size 4, concurrency 2),
with a tone instead of a model. Not run by the test suite: gradio 5.4.0 pins
python-multipart==0.0.12, which conflicts with the FastAPI stand-in's pin in requirements.txt.
Run it from its own venv (`pip install gradio==5.4.0 "huggingface_hub<1.0" pydantic==2.10.6`,
and ffmpeg on PATH; pydantic >= 2.11 makes gradio 5.4.0's API info raise and launch fail):

    NO_PROXY=127.0.0.1,localhost python webui_standin.py 7860

then point a `protocol: gradio` pool, or gradio_check.py, at http://127.0.0.1:7860 (poll
/config until it answers)."""

import sys

import gradio as gr
import numpy as np

MODES = ["预训练音色", "3s极速复刻", "跨语种复刻", "自然语言控制"]
SR = 24000


def generate_audio(tts_text, mode_checkbox_group, sft_dropdown, prompt_text, prompt_wav_upload,
                   prompt_wav_record, instruct_text, seed, stream, speed):
    prompt_wav = prompt_wav_upload or prompt_wav_record
    if mode_checkbox_group in ["3s极速复刻", "跨语种复刻", "自然语言控制"] and prompt_wav is None:
        gr.Warning("prompt音频为空，您是否忘记输入prompt音频？")
        return
    if "<|endofprompt|>" not in (prompt_text or "") + (tts_text or "") + (instruct_text or ""):
        raise AssertionError("<|endofprompt|> not found")
    if mode_checkbox_group == "预训练音色" and sft_dropdown != "中文女":
        raise KeyError(sft_dropdown)
    spoken = tts_text.split("<|endofprompt|>")[-1]
    n = int(SR * max(0.5, 0.06 * len(spoken)) / float(speed or 1.0))
    t = np.arange(n) / SR
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    if stream:
        for i in range(0, n, SR // 2):
            yield (SR, x[i:i + SR // 2])
    else:
        yield (SR, x)


with gr.Blocks() as demo:
    tts_text = gr.Textbox(label="输入合成文本", lines=1)
    mode = gr.Radio(choices=MODES, label="选择推理模式", value=MODES[0])
    sft = gr.Dropdown(choices=["中文女"], label="选择预训练音色", value="中文女")
    prompt_text = gr.Textbox(label="输入prompt文本")
    upload = gr.Audio(sources="upload", type="filepath", label="选择prompt音频文件，注意采样率不低于16khz")
    record = gr.Audio(sources="microphone", type="filepath", label="录制prompt音频文件")
    instruct = gr.Textbox(label="输入instruct文本")
    seed = gr.Number(value=0, label="随机推理种子")
    stream = gr.Radio(choices=[("否", False), ("是", True)], label="是否流式推理", value=False)
    speed = gr.Number(value=1, label="速度调节(仅支持非流式推理)", minimum=0.5, maximum=2.0, step=0.1)
    button = gr.Button("生成音频")
    out = gr.Audio(label="合成音频", autoplay=True, streaming=True)
    button.click(generate_audio, inputs=[tts_text, mode, sft, prompt_text, upload, record, instruct, seed, stream, speed],
                 outputs=[out])

demo.queue(max_size=4, default_concurrency_limit=2)
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]))
