"""Drives cosyvoice-sim's `--serve triton` mode with NVIDIA's own client library (tritonclient),
as CosyVoice's runtime/triton_trtllm clients do, and prints one JSON line of what it saw.

    triton_check.py http HOST:PORT MODEL TEXT      binary tensors over HTTP (infer)
    triton_check.py json HOST:PORT MODEL TEXT      pure JSON (binary_data=False)
    triton_check.py grpc HOST:PORT MODEL TEXT      decoupled streaming (start_stream +
                                                   async_stream_infer, empty final response)
    triton_check.py http-decoupled HOST:PORT MODEL TEXT   expects Triton's 501 error

Exit code 0 when the check passed; the JSON line says what was received.
"""

import json
import queue
import sys

import numpy as np


def inputs(mod, binary, text):
    wav = (0.1 * np.sin(np.arange(16000, dtype=np.float32) / 10.0)).astype(np.float32)[None, :]
    tensors = [
        ("reference_wav", wav, "FP32"),
        ("reference_wav_len", np.array([[wav.shape[1]]], dtype=np.int32), "INT32"),
        ("reference_text", np.array([["You are a helpful assistant.<|endofprompt|>A prompt."]], dtype=object), "BYTES"),
        ("target_text", np.array([[text]], dtype=object), "BYTES"),
    ]
    out = []
    for name, data, dtype in tensors:
        t = mod.InferInput(name, list(data.shape), dtype)
        if binary is None:
            t.set_data_from_numpy(data)
        else:
            t.set_data_from_numpy(data, binary_data=binary)
        out.append(t)
    return out


def check_http(url, model, text, binary):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=url, network_timeout=60)
    assert client.is_server_ready(), "server not ready"
    meta = client.get_model_metadata(model)
    result = client.infer(
        model,
        inputs(httpclient, binary, text),
        outputs=[httpclient.InferRequestedOutput("waveform", binary_data=binary)],
    )
    wave = result.as_numpy("waveform")
    return {"ok": True, "shape": list(wave.shape), "dtype": str(wave.dtype),
            "max_abs": float(np.abs(wave).max()), "inputs": [i["name"] for i in meta["inputs"]]}


def check_http_decoupled(url, model, text):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=url)
    try:
        client.infer(model, inputs(httpclient, True, text))
    except InferenceServerException as e:
        return {"ok": "decoupled" in str(e), "status": e.status(), "error": e.message()}
    return {"ok": False, "error": "no error from a decoupled model over HTTP"}


def check_grpc(url, model, text):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=url)
    assert client.is_server_ready(), "server not ready"
    assert client.is_model_ready(model), "model not ready"
    responses = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    client.async_stream_infer(
        model,
        inputs(grpcclient, None, text),
        request_id="check-1",
        outputs=[grpcclient.InferRequestedOutput("waveform")],
        enable_empty_final_response=True,
    )
    chunks, final = [], False
    while not final:
        result, error = responses.get(timeout=30)
        if error is not None:
            raise RuntimeError(f"stream error: {error}")
        resp = result.get_response()
        final = resp.parameters["triton_final_response"].bool_param
        wave = result.as_numpy("waveform")
        if wave is not None:
            chunks.append(wave)
    client.stop_stream()
    total = sum(c.shape[1] for c in chunks)
    return {"ok": total > 0 and final, "chunks": len(chunks), "samples": total,
            "dtype": str(chunks[0].dtype) if chunks else None}


def main():
    mode, url, model, text = sys.argv[1:5]
    if mode == "http":
        out = check_http(url, model, text, True)
    elif mode == "json":
        out = check_http(url, model, text, False)
    elif mode == "grpc":
        out = check_grpc(url, model, text)
    elif mode == "http-decoupled":
        out = check_http_decoupled(url, model, text)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))
    sys.exit(0 if out.get("ok") else 1)


if __name__ == "__main__":
    main()
