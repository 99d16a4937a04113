//! The identifiers the relay's layers pass between them.

use relais_protocol::pb;

/// A device's row id; operators see its fingerprint instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub i64);

/// What a stored message is, as queued and as delivered. Stored as its protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryKind {
    /// An MLS PrivateMessage with application data.
    Application,
    /// An MLS PublicMessage with a commit.
    Commit,
    /// An MLS Welcome for one device.
    Welcome,
    /// An MLS PublicMessage with a proposal (the service's removal of a revoked device).
    Proposal,
}

impl DeliveryKind {
    pub const ALL: [DeliveryKind; 4] = [
        DeliveryKind::Application,
        DeliveryKind::Commit,
        DeliveryKind::Welcome,
        DeliveryKind::Proposal,
    ];

    /// The protocol's number for this kind, which is also what storage keeps.
    pub fn wire(self) -> pb::DeliveryKind {
        match self {
            DeliveryKind::Application => pb::DeliveryKind::Application,
            DeliveryKind::Commit => pb::DeliveryKind::Commit,
            DeliveryKind::Welcome => pb::DeliveryKind::Welcome,
            DeliveryKind::Proposal => pb::DeliveryKind::Proposal,
        }
    }

    /// The kind a stored number stands for; `None` for a number no kind has.
    pub fn from_wire(n: i32) -> Option<DeliveryKind> {
        DeliveryKind::ALL.into_iter().find(|k| k.wire() as i32 == n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_goes_through_its_wire_number_and_back() {
        for kind in DeliveryKind::ALL {
            assert_eq!(DeliveryKind::from_wire(kind.wire() as i32), Some(kind));
        }
        assert_eq!(DeliveryKind::from_wire(0), None, "unspecified is no kind");
        assert_eq!(DeliveryKind::from_wire(99), None);
    }
}
