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
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening after drop"
    );
}
