//! `iaas-load`: the load tool. Each subcommand is a module of `iaas_benches::load`:
//!
//! ```text
//! iaas-load http --url http://127.0.0.1:8080 --duration 20 --mix refresh=8,list=4,login=1
//! iaas-load pipeline --bus kafka --brokers 127.0.0.1:9092 --rate 1000 --duration 20
//! iaas-load scale --counts 10,100,1000,10000
//! ```
//!
//! `scripts/load.sh` starts a platform and runs a subcommand against it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iaas_benches::load::{self, http, pipeline};

/// Command line of `iaas-load`.
#[derive(Debug, Parser)]
#[command(name = "iaas-load", about = "Load an iaas platform (or its parts) and report latency")]
struct Cli {
    /// What to load.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a running platform over HTTP (login, refresh, list) and report latency.
    Http(http::HttpArgs),
    /// Events at a target rate through outbox -> bus -> indexer (in this process); end-to-end
    /// latency, consumer lag, lost events.
    Pipeline(pipeline::PipelineArgs),
    /// Stop and start containers behind a running platform's back and report Docker event ->
    /// WebSocket frame latency.
    DockerWs(load::docker_ws::DockerWsArgs),
    /// The control plane's cost at 10 to 10,000 instances, in this process, in front of a
    /// simulated engine: a table and two plots (SVG).
    Scale(load::scale::ScaleArgs),
    /// The embedded event index's ingest rate and search latency as it grows from 100 thousand
    /// to 10 million events, in this process: a table and two plots (SVG).
    Events(load::events::EventsArgs),
    /// Whether every event in a platform's store (PostgreSQL) reached the broker, once: lost,
    /// duplicated and unknown events.
    OutboxAudit(load::outbox_audit::OutboxAuditArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    load::block_on(async move {
        match cli.command {
            Command::Http(args) => http::run(args).await,
            Command::Pipeline(args) => pipeline::run(args).await,
            Command::DockerWs(args) => load::docker_ws::run(args).await,
            Command::Scale(args) => load::scale::run(args).await,
            Command::Events(args) => load::events::run(args).await,
            Command::OutboxAudit(args) => load::outbox_audit::run(args).await,
        }
    })
}
