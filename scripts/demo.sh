#!/usr/bin/env bash
# The cosygate demo on a fresh machine: installs what it needs, builds in release mode, starts
# two simulated CosyVoice3 backends and the gateway (conf/demo.yaml), clones a voice from a
# prompt spoken by espeak-ng, and writes the answer to out.wav. The gateway keeps running.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/ensure-packages.sh
ensure_packages cmake=cmake cc=build-essential curl=curl espeak-ng=espeak-ng base64=coreutils

echo "== building (release)"
cargo build --release -p cosygate -p cosyvoice-sim
bin=target/release
mkdir -p target/demo
log=target/demo

# Stop what an earlier demo left running.
for p in "$log"/*.pid; do
  if [ -f "$p" ]; then kill "$(cat "$p")" 2>/dev/null || true; fi
done

wait_for() { # url, what
  for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "$2 did not come up; see $log/" >&2; exit 1
}

for port in 50000 50001; do
  nohup "$bin/cosyvoice-sim" --listen "127.0.0.1:$port" --slots 8 --rtf 0.1 >"$log/sim-$port.log" 2>&1 &
  echo $! >"$log/sim-$port.pid"
  wait_for "http://127.0.0.1:$port/docs" "cosyvoice-sim on $port"
done
nohup "$bin/cosygate" -c conf/demo.yaml >"$log/cosygate.log" 2>&1 &
echo $! >"$log/cosygate.pid"
wait_for "http://127.0.0.1:8080/health" "cosygate"

echo "== a 3-second voice prompt (espeak-ng), then a zero-shot clone of it through the gateway"
espeak-ng -v en-us -w "$log/prompt.wav" "Hello, this is the voice you are about to hear again."
printf '{"text":"Welcome to cosygate, the front door for self-hosted speech.","prompt_text":"Hello, this is the voice you are about to hear again.","prompt_audio":"%s"}' \
  "$(base64 -w0 "$log/prompt.wav")" >"$log/request.json"
curl -sS -D "$log/headers.txt" -o out.wav -H 'Content-Type: application/json' \
  --data-binary @"$log/request.json" http://127.0.0.1:8080/generate
cat "$log/headers.txt"
if ! head -c 4 out.wav | grep -q RIFF; then echo "no WAV came back:"; cat out.wav; exit 1; fi
echo "== wrote out.wav ($(stat -c %s out.wav) bytes)"

echo "== the same voice registered once, then named by voice_id, streamed as it is spoken"
printf '{"name":"demo","prompt_text":"Hello, this is the voice you are about to hear again.","prompt_audio":"%s"}' \
  "$(base64 -w0 "$log/prompt.wav")" >"$log/voice.json"
voice_id=$(curl -fsS -H 'Content-Type: application/json' --data-binary @"$log/voice.json" \
  http://127.0.0.1:8080/v1/voices | sed -n 's/.*"voice_id":"\([0-9a-f]*\)".*/\1/p')
echo "voice_id: $voice_id"
curl -sS -N -o "$log/streamed.wav" -w 'streamed %{size_download} bytes, first byte after %{time_starttransfer} s\n' \
  -H 'Content-Type: application/json' \
  -d "{\"text\":\"This sentence was streamed as it was spoken.\",\"voice_id\":\"$voice_id\",\"stream\":true}" \
  http://127.0.0.1:8080/generate
cat <<EOT

cosygate is running on http://127.0.0.1:8080 with two simulated backends (logs in $log/).
Try more:
  curl -sS -o again.wav -H 'Content-Type: application/json' --data-binary @$log/request.json http://127.0.0.1:8080/generate
  curl -sS http://127.0.0.1:8080/health
  curl -sS http://127.0.0.1:8080/v1/voices
  curl -sS -o openai.wav -H 'Content-Type: application/json' \\
    -d '{"model":"cosyvoice","input":"Spoken through the OpenAI API.","voice":"demo","response_format":"wav"}' \\
    http://127.0.0.1:8080/v1/audio/speech
  curl -sS -o dropin.pcm -F 'tts_text=Spoken through the route of CosyVoice itself.' \\
    -F 'prompt_text=Hello, this is the voice you are about to hear again.' \\
    -F prompt_wav=@$log/prompt.wav http://127.0.0.1:8080/inference_zero_shot
Operate it (the admin listener):
  open http://127.0.0.1:9090/ in a browser (the status page)
  curl -sS http://127.0.0.1:9090/metrics
  curl -sS http://127.0.0.1:9090/admin/backends
Stop everything:
  kill \$(cat $log/*.pid)
EOT
