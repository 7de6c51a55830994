//! The controller's configuration: flags with environment fallbacks, read once.

use std::net::SocketAddr;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "fleet-controller", version, about = "teefleet controller: sessions in, rule sets out")]
pub struct Config {
    /// Postgres connection URL; migrations are applied at start.
    #[arg(long, env = "FLEET_DATABASE_URL")]
    pub database_url: String,

    /// Address to serve gRPC on (admin API, agent streams, grpc.health.v1).
    #[arg(long, env = "FLEET_LISTEN", default_value = "127.0.0.1:7300")]
    pub listen: SocketAddr,
}
