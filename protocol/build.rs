use std::path::PathBuf;

/// Messages and gRPC clients of `kubeledger.v1`; the node generates the
/// servers itself (see node/build.rs), so nothing here runs a server.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Every client decodes through the bounded codec: a message with
        // too many fields or too deep is refused before prost allocates.
        .codec_path("crate::bounded_codec::BoundedCodec")
        .build_server(false)
        .file_descriptor_set_path(out_dir.join("kubeledger_descriptor.bin"))
        .bytes(".kubeledger.v1.SignedTransaction.body")
        .bytes(".kubeledger.v1.PeerFrame.consensus")
        .compile_protos(
            &[
                "proto/kubeledger/v1/types.proto",
                "proto/kubeledger/v1/ledger.proto",
                "proto/kubeledger/v1/peer.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
