//! Reads the relay's own Prometheus metrics, to see inside a run: how many operations
//! the storage writer commits per transaction and how long a commit takes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Largest metrics page read: the relay's is a few KB.
const PAGE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// One scrape: every sample by its full name (labels included).
#[derive(Debug, Default, Clone)]
pub struct Samples(HashMap<String, f64>);

impl Samples {
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// Adds another process's samples to these: several nodes read as one relay.
    pub fn add(&mut self, other: &Samples) {
        for (name, value) in &other.0 {
            *self.0.entry(name.clone()).or_default() += value;
        }
    }
}

/// `GET /metrics` over plain HTTP; empty samples when the relay does not answer.
pub async fn scrape(addr: Option<SocketAddr>) -> Samples {
    let Some(addr) = addr else {
        return Samples::default();
    };
    let fetch = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: relais\r\nConnection: close\r\n\r\n")
            .await?;
        let mut page = Vec::new();
        tcp.take(PAGE_BYTES_MAX).read_to_end(&mut page).await?;
        anyhow::Ok(String::from_utf8_lossy(&page).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(5), fetch).await {
        Ok(Ok(page)) => parse(&page),
        _ => Samples::default(),
    }
}

fn parse(page: &str) -> Samples {
    let body = page.split_once("\r\n\r\n").map_or(page, |(_, body)| body);
    Samples(
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.trim().to_owned(), value.trim().parse().ok()?))
            })
            .collect(),
    )
}

/// What the storage writer did between two scrapes.
#[derive(Debug, Clone, Copy)]
pub struct WriterFigures {
    pub batches: f64,
    /// Operations (submissions, acknowledgements) per transaction, on average.
    pub batch_ops_mean: f64,
    /// Time from the start of a batch to its commit, on average, in milliseconds.
    pub commit_ms_mean: f64,
}

pub fn writer(before: &Samples, after: &Samples) -> Option<WriterFigures> {
    let delta = |name: &str| after.get(name) - before.get(name);
    let batches = delta("relais_storage_batch_size_count");
    if batches <= 0.0 {
        return None;
    }
    Some(WriterFigures {
        batches,
        batch_ops_mean: delta("relais_storage_batch_size_sum") / batches,
        commit_ms_mean: 1000.0 * delta("relais_storage_commit_seconds_sum")
            / delta("relais_storage_commit_seconds_count").max(1.0),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_a_page() {
        let page = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n# HELP x y\n# TYPE x counter\nrelais_storage_batch_size_sum 300\nrelais_storage_batch_size_count 10\nrelais_requests_total{type=\"ack\",outcome=\"ok\"} 5\n";
        let samples = super::parse(page);
        assert_eq!(samples.get("relais_storage_batch_size_count"), 10.0);
        assert_eq!(
            samples.get("relais_requests_total{type=\"ack\",outcome=\"ok\"}"),
            5.0
        );
        let before = super::Samples::default();
        let figures = super::writer(&before, &samples).expect("batches");
        assert_eq!(figures.batch_ops_mean, 30.0);
    }
}
