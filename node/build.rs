/// The gRPC servers of `kubeledger.v1`. Messages and clients come from
/// `kubeledger-protocol`, which owns the .proto files.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .codec_path("::kubeledger_protocol::bounded_codec::BoundedCodec")
        .build_client(false)
        .build_server(true)
        .extern_path(".kubeledger.v1", "::kubeledger_protocol::proto")
        .compile_protos(
            &[
                "../protocol/proto/kubeledger/v1/ledger.proto",
                "../protocol/proto/kubeledger/v1/peer.proto",
            ],
            &["../protocol/proto"],
        )?;
    println!("cargo:rerun-if-changed=../protocol/proto");
    Ok(())
}
