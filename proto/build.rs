//! Compiles the contract with the `protoc` shipped inside `protoc-bin-vendored`, so a fresh
//! machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::path::{Path, PathBuf};

    let protos = [
        "gatehouse/v1/common.proto",
        "gatehouse/v1/authentication.proto",
        "gatehouse/v1/session.proto",
        "gatehouse/v1/personal.proto",
        "gatehouse/v1/node.proto",
    ]
    .map(PathBuf::from);
    let well_known = protoc_bin_vendored::include_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("gatehouse_descriptor.bin"))
        .compile_with_config(config, &protos, &[Path::new(".").to_path_buf(), well_known])?;
    Ok(())
}
