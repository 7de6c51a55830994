//! The throwaway Postgres starts, serves the databases it creates, and is gone after drop.

use teefleet_lab::TempPostgres;

#[tokio::test]
async fn starts_creates_databases_and_cleans_up() {
    let pg = TempPostgres::start().await.expect("start Postgres");
    assert!(pg.url().starts_with("postgres://postgres@127.0.0.1:"));
    assert!(pg.url().ends_with("/postgres"));

    let url = pg.create_database("lab_one").await.expect("create database");
    assert_eq!(url, format!("postgres://postgres@127.0.0.1:{}/lab_one", pg.port()));
    let out = tokio::process::Command::new("psql")
        .args([url.as_str(), "-tAc", "select current_database()"])
        .output()
        .await
        .expect("run psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "lab_one");

    // A second database is independent; a duplicate is an error, not a panic.
    pg.create_database("lab_two").await.expect("second database");
    assert!(pg.create_database("lab_one").await.is_err());
    assert!(pg.create_database("bad-name; drop").await.is_err());

    let port = pg.port();
    drop(pg);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "server still listening after drop");
}

/// Run only as the child of `leaked_cluster_is_reaped_after_exit`: starts a cluster, tells
/// the parent where it is, and exits without dropping it.
#[tokio::test]
#[ignore = "helper process for leaked_cluster_is_reaped_after_exit"]
async fn leaked_cluster_child() {
    if std::env::var_os("TEEFLEET_PG_LEAK_CHILD").is_none() {
        return;
    }
    let pg = TempPostgres::start().await.expect("start Postgres");
    let dir = pg.log_path().parent().expect("dir").display().to_string();
    eprintln!("LEAKED {} {dir}", pg.port());
    std::mem::forget(pg);
}

#[tokio::test]
async fn leaked_cluster_is_reaped_after_exit() {
    let exe = std::env::current_exe().expect("test binary");
    let out = tokio::process::Command::new(exe)
        .args(["--exact", "leaked_cluster_child", "--ignored", "--nocapture"])
        .env("TEEFLEET_PG_LEAK_CHILD", "1")
        .output()
        .await
        .expect("run child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find_map(|l| l.strip_prefix("LEAKED ")).unwrap_or_else(|| panic!("child said: {stderr}"));
    let (port, dir) = line.split_once(' ').expect("port and dir");
    let port: u16 = port.parse().expect("port");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        let exists = std::path::Path::new(dir).exists();
        if !listening && !exists {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "leaked cluster still there: listening={listening} dir={exists}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn shared_cluster_is_one_per_process() {
    let a = TempPostgres::shared().await.expect("shared");
    let b = TempPostgres::shared().await.expect("shared");
    assert!(std::ptr::eq(a, b));
    a.create_database("shared_one").await.expect("database");
}
