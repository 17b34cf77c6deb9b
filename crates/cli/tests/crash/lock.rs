//! One process per data directory.

use std::time::Duration;

use crate::harness::{self, Launch, Server};

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let home = harness::scratch();
    // Few partitions: a fresh directory with the default 65,536 takes
    // seconds to start in a debug build.
    let launch = Launch::new(home.path(), &["--partitions", "256"]);
    let mut first = Server::start(&launch, &[]);
    let mut con = first.connect();
    harness::write_works(&mut con, "key", "value", "first server");

    let mut second = assert_cmd::Command::from_std(launch.command("127.0.0.1:0"));
    let output = second
        .timeout(Duration::from_secs(30))
        .output()
        .expect("the second ringkv runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && output.status.code().is_some(),
        "the second server must exit with an error code, got {}; stderr:\n{stderr}",
        output.status
    );
    assert!(
        stderr.contains("in use by another ringkv process"),
        "stderr names the reason:\n{stderr}"
    );
    assert!(
        stderr.contains(&*launch.data.to_string_lossy()),
        "stderr names the directory:\n{stderr}"
    );
    // The first one still serves, its data intact.
    let got: Option<String> = redis::cmd("GET").arg("key").query(&mut con).expect("GET");
    assert_eq!(got.as_deref(), Some("value"));
    first.kill();
}
