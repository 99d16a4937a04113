//! The relay under test as one or more relaisd nodes on one database (`--nodes`), and
//! which node each device of the load connects to.
//!
//! Setup (enrollment, groups) goes through the first node only: accounts and groups live
//! in the shared database, so every node serves them; only the load is spread.

use std::path::Path;

use crate::daemon::{Daemon, Settings};
use crate::wire::Endpoint;

/// The nodes of one run, first one first.
pub struct Nodes {
    pub nodes: Vec<Daemon>,
}

impl Nodes {
    /// Starts `count` nodes: the first in `dir/relay`, the others in `dir/relay-N` with
    /// the first one's identity.
    pub async fn start(dir: &Path, settings: Settings, count: usize) -> anyhow::Result<Nodes> {
        let first = Daemon::start(&dir.join("relay"), settings.clone()).await?;
        let mut nodes = vec![first];
        for n in 2..=count {
            let dir = dir.join(format!("relay-{n}"));
            let node = Daemon::start_beside(&nodes[0], &dir, settings.clone()).await?;
            nodes.push(node);
        }
        Ok(Nodes { nodes })
    }

    /// The node setup goes through.
    pub fn first(&self) -> &Daemon {
        // `start` always starts at least the first node.
        &self.nodes[0]
    }

    /// Each node's client endpoint, in node order.
    pub fn endpoints(&self) -> anyhow::Result<Vec<Endpoint>> {
        self.nodes.iter().map(Daemon::endpoint).collect()
    }

    /// The highest resident memory of any one node's process.
    pub fn peak_rss_bytes(&mut self) -> u64 {
        self.nodes
            .iter_mut()
            .map(Daemon::peak_rss_bytes)
            .max()
            .unwrap_or(0)
    }

    /// Stops every node; the first error is returned after all were asked to stop.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for node in &mut self.nodes {
            let stopped = node.stop().await;
            if result.is_ok() {
                result = stopped;
            }
        }
        result
    }
}

/// The node device `index` of a 1:1 pair load connects to, among `nodes`.
///
/// A load balancer spreading connections evenly puts both ends of a pair on one node
/// about 1/N of the time. Senders (even indices) go round the nodes; each receiver is
/// shifted from its sender by one more node for every N pairs, so each node carries as
/// many senders as receivers and 1/N of the pairs are on a single node. With two nodes:
/// pairs on (1, 1), (2, 2), (1, 2), (2, 1), and again.
pub fn pair_node(index: u32, nodes: usize) -> usize {
    let index = index as usize;
    let pair = index / 2;
    let shift = if index.is_multiple_of(2) {
        0
    } else {
        pair / nodes
    };
    (pair + shift) % nodes
}

/// The node member `index` of a group connects to: round the nodes, the sender (index
/// 0) on the first.
pub fn member_node(index: u32, nodes: usize) -> usize {
    index as usize % nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_spread_evenly_and_one_in_n_stays_on_one_node() {
        for nodes in 1..=4 {
            let pairs = 8 * nodes * nodes;
            let mut senders = vec![0; nodes];
            let mut receivers = vec![0; nodes];
            let mut same = 0;
            for pair in 0..pairs as u32 {
                let (s, r) = (pair_node(2 * pair, nodes), pair_node(2 * pair + 1, nodes));
                senders[s] += 1;
                receivers[r] += 1;
                same += usize::from(s == r);
            }
            assert!(senders.iter().all(|&n| n == pairs / nodes), "{senders:?}");
            assert!(
                receivers.iter().all(|&n| n == pairs / nodes),
                "{receivers:?}"
            );
            assert_eq!(same, pairs / nodes, "{nodes} nodes");
        }
    }

    #[test]
    fn two_nodes_alternate_pairs_on_and_across() {
        let placed: Vec<(usize, usize)> = (0..4)
            .map(|p| (pair_node(2 * p, 2), pair_node(2 * p + 1, 2)))
            .collect();
        assert_eq!(placed, [(0, 0), (1, 1), (0, 1), (1, 0)]);
        assert_eq!(
            (0..4).map(|i| member_node(i, 2)).collect::<Vec<_>>(),
            [0, 1, 0, 1]
        );
    }
}
