//! Generates the gRPC client for the node's `kubeledger.v1.Ledger` service.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../node/proto");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(
            &["../node/proto/kubeledger/v1/ledger.proto"],
            &["../node/proto"],
        )?;
    Ok(())
}
