fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Vendored protoc: no system protobuf compiler needed on any machine.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_protos(
        &["proto/db.proto", "proto/raft.proto", "proto/calendar.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
