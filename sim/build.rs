//! Generates the KServe v2 gRPC server (`../proto/kserve_inference.proto`, shared with the
//! gateway) for `--serve triton --grpc-listen`. Needs `protoc` (Debian: protobuf-compiler;
//! scripts/test.sh installs it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/kserve_inference.proto");
    tonic_prost_build::configure()
        .build_client(false)
        .compile_protos(&["../proto/kserve_inference.proto"], &["../proto"])?;
    Ok(())
}
