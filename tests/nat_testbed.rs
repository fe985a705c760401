//! Runs the NAT testbed (`tests/nat/testbed.sh ci`: network namespaces, NAT routers, a relay,
//! real `gossipdir node` processes) against the binary cargo built. Needs root and iproute2 +
//! iptables, takes a few minutes, so it only runs when `GOSSIPDIR_NAT_TESTBED=1`; otherwise it
//! passes at once, saying it was skipped.
//!
//! The scenarios are the script's `ci` default (`GD_SCENARIOS` overrides them): cone NAT,
//! symmetric NAT, and cone NAT with 200 ms of delay each way at router B. The delay needs the
//! `netdelay` binary of the workspace member `tests/nat/netdelay`, which a workspace build
//! (`cargo build --workspace`, `cargo nextest run --workspace`) puts beside `gossipdir`; when it
//! is not there the script builds it.

use std::path::Path;
use std::process::Command;

#[test]
fn nat_testbed() {
    if std::env::var("GOSSIPDIR_NAT_TESTBED").as_deref() != Ok("1") {
        eprintln!("skipped: set GOSSIPDIR_NAT_TESTBED=1 (as root) to run tests/nat/testbed.sh ci");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nat/testbed.sh");
    let gossipdir = env!("CARGO_BIN_EXE_gossipdir");
    let mut command = Command::new("bash");
    command
        .arg(script)
        .arg("ci")
        .env("GOSSIPDIR_BIN", gossipdir)
        .env("GD_STATE", std::env::temp_dir().join("gd-nat-cargo"));
    let netdelay = Path::new(gossipdir).with_file_name("netdelay");
    if netdelay.is_file() && std::env::var_os("GD_NETDELAY_BIN").is_none() {
        command.env("GD_NETDELAY_BIN", netdelay);
    }
    let status = command.status().expect("run tests/nat/testbed.sh");
    assert!(status.success(), "NAT testbed failed: {status}");
}
