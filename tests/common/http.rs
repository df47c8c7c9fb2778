//! Checks every test makes of an HTTP answer. Also used by the simulator's tests
//! (`sim/tests/sim.rs`, through `#[path]`), so it names no gateway code.

use cosygate_wav::{parse_wav, WavInfo};

/// Reads a 200 `audio/wav` answer and checks it is a complete WAV whose length matches its
/// `Content-Length`.
pub async fn complete_wav(resp: reqwest::Response) -> (bytes::Bytes, WavInfo) {
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    let declared: usize = resp.headers()["content-length"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    let wav = resp.bytes().await.expect("body");
    assert_eq!(wav.len(), declared, "Content-Length matches the body");
    let info = parse_wav(&wav).expect("a complete WAV");
    (wav, info)
}
