//! A measured phase: what the load and every relaisd node did between its start and its
//! end, and, on PostgreSQL, the database server's CPU in the same time.

use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::load::Counters;
use crate::machine;
use crate::metrics;
use crate::report::Report;

/// How often the relay's metrics are scraped during a measured phase when they are on.
const SCRAPE_EVERY: Duration = Duration::from_secs(1);

/// Figures taken at the start and the end of a measured phase.
pub struct Measure {
    at: Instant,
    /// Each node's process; its metrics start from zero again after a restart.
    pids: Vec<Option<u32>>,
    accepted: u64,
    delivered: u64,
    /// CPU seconds of all nodes together.
    cpu_s: f64,
    /// The bench's own CPU seconds, to show its share of the machine in this phase.
    bench_cpu_s: Option<f64>,
    /// The PostgreSQL server's CPU seconds, when the relay stores there.
    postgres_cpu_s: Option<f64>,
    /// Each node's metrics.
    samples: Vec<metrics::Samples>,
    /// Scrape every node every second while the phase lasts, as a busy Prometheus would.
    scrapers: Vec<tokio::task::JoinHandle<()>>,
}

/// What happened during a measured phase.
pub struct Measured {
    pub seconds: f64,
    pub accepted_per_s: f64,
    pub delivered_per_s: f64,
    pub delivered: u64,
    pub cpu_s: f64,
}

impl Measure {
    pub async fn start(nodes: &[Daemon], counters: &Counters) -> Measure {
        let mut samples = Vec::with_capacity(nodes.len());
        for node in nodes {
            samples.push(metrics::scrape(node.metrics_addr).await);
        }
        let scrapers = nodes
            .iter()
            .filter_map(|node| node.metrics_addr)
            .map(|addr| {
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(SCRAPE_EVERY);
                    loop {
                        every.tick().await;
                        metrics::scrape(Some(addr)).await;
                    }
                })
            })
            .collect();
        Measure {
            scrapers,
            at: Instant::now(),
            pids: nodes.iter().map(Daemon::pid).collect(),
            accepted: Counters::get(&counters.accepted),
            delivered: Counters::get(&counters.delivered),
            cpu_s: nodes.iter().map(Daemon::cpu_seconds).sum(),
            bench_cpu_s: machine::own_cpu_seconds(),
            postgres_cpu_s: on_postgres(nodes).then(machine::postgres_cpu_seconds),
            samples,
        }
    }

    /// Measures the next `duration` of the load: a phase from now until then.
    pub async fn over(
        duration: Duration,
        nodes: &[Daemon],
        counters: &Counters,
        report: &mut Report,
    ) -> Measured {
        let measure = Measure::start(nodes, counters).await;
        tokio::time::sleep(duration).await;
        measure.end(nodes, counters, report).await
    }

    /// Ends the phase and writes the relay's side of it into the report.
    pub async fn end(self, nodes: &[Daemon], counters: &Counters, report: &mut Report) -> Measured {
        let seconds = self.at.elapsed().as_secs_f64();
        for scraper in &self.scrapers {
            scraper.abort();
        }
        let delivered = Counters::get(&counters.delivered) - self.delivered;
        let accepted = Counters::get(&counters.accepted) - self.accepted;
        let cpu_s = nodes.iter().map(Daemon::cpu_seconds).sum::<f64>() - self.cpu_s;
        let postgres_cpu_s = self
            .postgres_cpu_s
            .map(|before| machine::postgres_cpu_seconds() - before);
        // The writers of all nodes together: their counters summed before and after, for
        // the nodes whose process lasted the whole phase.
        let (mut before, mut after) = (metrics::Samples::default(), metrics::Samples::default());
        let mut same_processes = true;
        for (i, node) in nodes.iter().enumerate() {
            same_processes &= self.pids.get(i).copied().flatten() == node.pid();
            if let Some(start) = self.samples.get(i) {
                before.add(start);
            }
            after.add(&metrics::scrape(node.metrics_addr).await);
        }
        if let Some(writer) = metrics::writer(&before, &after).filter(|_| same_processes) {
            let figures = &mut report.figures;
            figures.insert("writer_batches_per_s".into(), writer.batches / seconds);
            figures.insert("writer_batch_ops_mean".into(), writer.batch_ops_mean);
            figures.insert("writer_commit_ms_mean".into(), writer.commit_ms_mean);
        }
        if delivered > 0 {
            report.figures.insert(
                "relaisd_cpu_us_per_delivery".into(),
                cpu_s * 1e6 / delivered as f64,
            );
        }
        if let Some(postgres) = postgres_cpu_s {
            report.figures.insert("postgres_cpu_s".into(), postgres);
            if delivered > 0 {
                report.figures.insert(
                    "postgres_cpu_us_per_delivery".into(),
                    postgres * 1e6 / delivered as f64,
                );
            }
        }
        report.daemon.cpu_s = Some(cpu_s);
        if let Some((after, before)) = machine::own_cpu_seconds().zip(self.bench_cpu_s) {
            report
                .figures
                .insert("bench_cpu_s_measured_phase".into(), after - before);
        }
        Measured {
            seconds,
            accepted_per_s: accepted as f64 / seconds,
            delivered_per_s: delivered as f64 / seconds,
            delivered,
            cpu_s,
        }
    }
}

impl Measured {
    /// Writes the rates at which the relay accepted and delivered messages into the report.
    pub fn report_rates(&self, report: &mut Report) {
        report.accepted_msgs_per_s = Some(self.accepted_per_s);
        report.delivered_msgs_per_s = Some(self.delivered_per_s);
    }
}

fn on_postgres(nodes: &[Daemon]) -> bool {
    nodes.iter().any(Daemon::on_postgres)
}
