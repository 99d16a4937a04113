//! relais-bench: measures a real relaisd under load, over real TLS, with devices set up by
//! the real client library.
//!
//! `scenarios` holds the eight measurements; `daemon` starts and kills the relay, `nodes`
//! runs several on one PostgreSQL database (`database`, fresh for each run); `setup`
//! enrolls devices and makes groups with the client library; `wire` and `load` drive raw
//! connections with hand-made MLS messages (`payload`); `report` prints and serialises.

pub mod cli;
pub mod daemon;
pub mod database;
pub mod load;
pub mod machine;
pub mod metrics;
pub mod nodes;
pub mod payload;
pub mod record;
pub mod report;
pub mod scenarios;
pub mod setup;
pub mod wire;

use std::path::Path;

use anyhow::Context as _;

/// Runs the scenario, prints the table, and writes the JSON file if asked.
pub async fn run(args: cli::Args) -> anyhow::Result<()> {
    let report = scenarios::run(&args).await?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

fn write_json(path: &Path, report: &report::Report) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
