//! Compiles our wire-compatible subset of Envoy's ext_authz protos with protox (pure Rust,
//! no system protoc) and generates the tonic server and a client (the client drives tests).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["envoy/service/auth/v3/external_auth.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
