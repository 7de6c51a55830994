//! Compiles `fleet/v1/*.proto` with protox, a pure-Rust protobuf compiler, so building
//! needs no system `protoc`; and records the git commit built, for every binary's
//! `--version`.

use std::{path::Path, process::Command};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["fleet/v1/fleet.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["."])?;
    // The controller serves these descriptors over gRPC reflection, so grpcurl needs no
    // copy of the .proto.
    let out = std::env::var("OUT_DIR")?;
    std::fs::write(Path::new(&out).join("fleet_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().compile_fds(fds)?;
    commit();
    Ok(())
}

/// `TEEFLEET_COMMIT`: the commit's short hash, or "unknown" outside a git checkout. A
/// build from a source tarball can name it by setting `TEEFLEET_COMMIT` itself. Rebuilt
/// when HEAD moves, so a binary never names an older commit.
fn commit() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let given = std::env::var("TEEFLEET_COMMIT").ok().filter(|c| !c.is_empty());
    let hash = given.or_else(|| git(&["rev-parse", "--short=12", "HEAD"])).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=TEEFLEET_COMMIT={hash}");
    println!("cargo:rerun-if-env-changed=TEEFLEET_COMMIT");
    let (Some(dir), Some(common)) = (git(&["rev-parse", "--git-dir"]), git(&["rev-parse", "--git-common-dir"])) else {
        return;
    };
    let mut watched = vec![Path::new(&dir).join("HEAD"), Path::new(&common).join("packed-refs")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(Path::new(&common).join(branch));
    }
    // A path that does not exist would rerun this script on every build.
    for path in watched.into_iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
