//! redis-py 8, the client `pip install redis` gives, against the server
//! (set/get, protocol=2, pipelines with and without MULTI/EXEC, WATCH with
//! `transaction()`, expiry, `scan_iter`):
//! runs `tests/python/test_redis_py.py` (which fails if redis-py is
//! missing: `.ci/run` installs it from `tests/python/requirements.txt`).

use std::path::PathBuf;

use ringkv_server::ServerConfig;

use crate::common::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_works_with_default_settings_and_protocol_2() {
    let server = start(ServerConfig::default()).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/python/test_redis_py.py");
    let port = server.addr.port().to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .env("RINGKV_PORT", port)
            .output()
    })
    .await
    .expect("the runner does not panic")
    .expect("python3 runs (install Python 3 and tests/python/requirements.txt)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "redis-py checks failed:\n{stdout}\n{stderr}"
    );
    server.stop().await;
}
