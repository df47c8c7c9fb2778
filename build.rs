//! Generates the KServe v2 gRPC client (`proto/kserve_inference.proto`) for `protocol: triton`
//! pools with `transport: grpc`. Needs `protoc` (Debian: protobuf-compiler; scripts/test.sh
//! installs it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/kserve_inference.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/kserve_inference.proto"], &["proto"])?;
    Ok(())
}
