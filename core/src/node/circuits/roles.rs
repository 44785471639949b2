//! What each circuit role accepts. A decoded [`CircuitMsg`] is turned into
//! the message type of the role that received it before anything acts on
//! it; a message the role may not receive does not convert, and the
//! circuit is torn down as a protocol violation. Handlers match on these
//! types, so a role cannot act on a message it was never allowed.
//!
//! Roles: the client end ([`AtClient`]), a relay in the middle
//! ([`AtMiddle`]), the last hop ([`AtLastHop`]). The introduction point and
//! rendezvous roles join here with their own types.

use crate::circuit::CircuitMsg;

/// Messages the client end of a circuit accepts from its hops.
#[derive(Debug)]
pub(super) enum AtClient {
    /// The last hop extended the circuit: the new hop's msg2.
    Extended { handshake: Vec<u8> },
    /// A hop answered a probe.
    ProbeReply { nonce: u64 },
    /// Data from the last hop.
    Data { bytes: Vec<u8> },
    /// The last hop took another `sendme_every` data cells.
    Sendme,
    /// A search answer from the exit.
    SearchReply { bytes: Vec<u8> },
    /// An introduction or rendezvous answer from the last hop.
    RendezvousReply { bytes: Vec<u8> },
}

impl AtClient {
    pub(super) fn accept(msg: CircuitMsg) -> Option<AtClient> {
        Some(match msg {
            CircuitMsg::Extended { handshake } => AtClient::Extended { handshake },
            CircuitMsg::ProbeReply { nonce } => AtClient::ProbeReply { nonce },
            CircuitMsg::Data { bytes } => AtClient::Data { bytes },
            CircuitMsg::Sendme => AtClient::Sendme,
            CircuitMsg::SearchReply { bytes } => AtClient::SearchReply { bytes },
            CircuitMsg::RendezvousReply { bytes } => AtClient::RendezvousReply { bytes },
            _ => return None,
        })
    }
}

/// Messages a relay in the middle of a circuit accepts from the client.
#[derive(Debug)]
pub(super) enum AtMiddle {
    /// A probe to this hop.
    Probe { nonce: u64 },
}

impl AtMiddle {
    pub(super) fn accept(msg: CircuitMsg) -> Option<AtMiddle> {
        match msg {
            CircuitMsg::Probe { nonce } => Some(AtMiddle::Probe { nonce }),
            _ => None,
        }
    }
}

/// Messages the last hop of a circuit accepts from the client.
#[derive(Debug)]
pub(super) enum AtLastHop {
    /// Extend to the relay the descriptor describes (only in a
    /// RELAY_EARLY cell).
    Extend {
        descriptor: Vec<u8>,
        handshake: Vec<u8>,
    },
    /// A probe to this hop.
    Probe { nonce: u64 },
    /// Data from the client.
    Data { bytes: Vec<u8> },
    /// The client took another `sendme_every` data cells.
    Sendme,
    /// A publication or a search to start from here (the exit).
    Search { bytes: Vec<u8> },
    /// Be an introduction or rendezvous point, introduce, or join.
    Rendezvous { bytes: Vec<u8> },
}

impl AtLastHop {
    /// `early`: the message came in a RELAY_EARLY cell.
    pub(super) fn accept(msg: CircuitMsg, early: bool) -> Option<AtLastHop> {
        Some(match msg {
            CircuitMsg::Extend {
                descriptor,
                handshake,
            } if early => AtLastHop::Extend {
                descriptor,
                handshake,
            },
            CircuitMsg::Probe { nonce } => AtLastHop::Probe { nonce },
            CircuitMsg::Data { bytes } => AtLastHop::Data { bytes },
            CircuitMsg::Sendme => AtLastHop::Sendme,
            CircuitMsg::Search { bytes } => AtLastHop::Search { bytes },
            CircuitMsg::Rendezvous { bytes } => AtLastHop::Rendezvous { bytes },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_refuses_what_it_may_not_receive() {
        let extend = || CircuitMsg::Extend {
            descriptor: vec![1],
            handshake: vec![2],
        };
        assert!(AtLastHop::accept(extend(), true).is_some());
        assert!(
            AtLastHop::accept(extend(), false).is_none(),
            "EXTEND outside RELAY_EARLY"
        );
        assert!(AtMiddle::accept(extend()).is_none());
        assert!(AtMiddle::accept(CircuitMsg::Data { bytes: vec![] }).is_none());
        assert!(AtMiddle::accept(CircuitMsg::Probe { nonce: 1 }).is_some());
        assert!(AtClient::accept(extend()).is_none());
        assert!(AtClient::accept(CircuitMsg::Create { handshake: vec![] }).is_none());
        assert!(AtLastHop::accept(CircuitMsg::Extended { handshake: vec![] }, true).is_none());
        assert!(AtClient::accept(CircuitMsg::Sendme).is_some());
    }
}
