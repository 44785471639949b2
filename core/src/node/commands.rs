//! What a driver can ask of a [`Node`] besides its inputs: settings,
//! guard restoration, probes, data on circuits, publication and search.

use rand_core::RngCore;

use super::circuits::World;
use super::timers::Timer;
use super::transfer::{DownloadId, DownloadStartError};
use super::{
    CircuitId, ConnectError, GuardRecord, Millis, Node, Observation, Purpose, RelayCircuitId,
    SearchError, SearchId, SendError, SessionId,
};
use crate::circuit::CircuitMsg;
use crate::content::ContentId;
use crate::identity::PublisherId;
use crate::record::SignedRecord;
use crate::rendezvous::{ServiceKey, ServicePublic};
use crate::search::Query;
use crate::transfer::{Bitfield, TransferMsg};

impl Node {
    /// Changes how many built circuits the node keeps ready (0: builds no
    /// more; existing circuits live out their lifetime).
    pub fn set_circuits_wanted(&mut self, n: usize) {
        self.config.circuits.circuits_wanted = n;
    }

    /// Records what relays see in clear (simulator observer checks).
    pub fn set_observing(&mut self, on: bool) {
        self.circ.set_observing(on);
    }

    /// Takes the observations recorded since the last call.
    pub fn take_observations(&mut self) -> Vec<Observation> {
        self.circ.take_observations()
    }

    /// Restores persisted guards (call once, right after [`Node::new`]).
    /// Records that do not decode or verify (signature and proof of work;
    /// their age is not checked: the guard re-sends a fresh descriptor when
    /// we link to it) are skipped. Returns how many were restored.
    pub fn restore_guards(&mut self, now: Millis, records: &[GuardRecord]) -> usize {
        self.clamp(now);
        circuit_parts!(self, cx, w, circ);
        let n = circ.restore_guards(&mut cx, &mut w, records);
        self.settle();
        n
    }

    /// Sends a probe over a built circuit: nothing happens if it comes
    /// back; the circuit closes if it does not come back in time.
    pub fn probe_circuit(&mut self, now: Millis, id: CircuitId) -> bool {
        self.clamp(now);
        circuit_parts!(self, cx, w, circ);
        let sent = circ.probe(&mut cx, &mut w, id);
        self.settle();
        sent
    }

    /// Sends data to the last hop of a built circuit (flow controlled).
    pub fn send_data(&mut self, id: CircuitId, data: &[u8]) -> Result<(), SendError> {
        // Session circuits carry only sealed session data.
        if self.circ.purpose(id) != Some(Purpose::General) {
            return Err(SendError::NoCircuit);
        }
        circuit_parts!(self, cx, w, circ);
        let r = circ.send_data(&mut cx, &mut w, id, data);
        self.settle();
        r
    }

    /// As the last hop of a circuit, sends data back to its client (flow
    /// controlled).
    pub fn relay_send_data(&mut self, id: RelayCircuitId, data: &[u8]) -> Result<(), SendError> {
        let (mut cx, p) = self.split();
        let r = p.circ.relay_send_data(&mut cx, id, data);
        self.settle();
        r
    }

    // ---- rendezvous ---------------------------------------------------

    /// Runs a service under `key`: introduction points are set up over
    /// the next ticks and announced with [`Event::IntroPoints`];
    /// introductions then open sessions ([`Event::SessionOpened`] with
    /// `inbound`).
    pub fn add_service(&mut self, now: Millis, key: ServiceKey) -> PublisherId {
        self.clamp(now);
        let (mut cx, p) = self.split();
        let id = p.rend.add_service(&mut cx, key);
        self.arm_rendezvous();
        self.settle();
        id
    }

    /// Sets the content one of our services serves: provider records
    /// (content id → service key and introduction points) are signed and
    /// published through our circuits, again whenever the introduction
    /// points change and before they expire. Downloaders find them with
    /// an exact content-id search ([`Event::ProvidersFound`]).
    pub fn provide(&mut self, now: Millis, service: &PublisherId, content: Vec<ContentId>) {
        self.clamp(now);
        let (mut cx, p) = self.split();
        p.rend.provide(&mut cx, service, content);
        self.settle();
    }

    /// Stops a service; its introduction circuits close.
    pub fn remove_service(&mut self, now: Millis, id: &PublisherId) {
        self.clamp(now);
        let (mut cx, p) = self.split();
        p.rend.remove_service(&mut cx, id);
        self.settle();
    }

    /// The introduction points of one of our services that are in place.
    pub fn intro_points(&self, id: &PublisherId) -> Vec<Vec<u8>> {
        self.rend.intro_points(id)
    }

    /// Opens an end-to-end session with `service` through one of
    /// `intro_points` (its introduction points' signed descriptors, from
    /// its provider record), meeting at a rendezvous point of our choice.
    /// [`Event::SessionOpened`] or [`Event::SessionClosed`] follows.
    pub fn connect(
        &mut self,
        now: Millis,
        service: ServicePublic,
        intro_points: Vec<Vec<u8>>,
    ) -> Result<SessionId, ConnectError> {
        self.clamp(now);
        let (mut cx, p) = self.split();
        let r = p.rend.connect(&mut cx, service, intro_points, false);
        self.arm_rendezvous();
        self.settle();
        r
    }

    /// Sends `bytes` (at most [`crate::rendezvous::MAX_SESSION_PLAINTEXT`])
    /// on an open session, sealed end to end (flow controlled: on
    /// [`SendError::NoCredit`], wait for [`Node::session_window`] to grow).
    pub fn session_send(&mut self, id: SessionId, bytes: &[u8]) -> Result<(), SendError> {
        if bytes.len() > crate::rendezvous::MAX_SESSION_PLAINTEXT {
            return Err(SendError::TooLarge);
        }
        let k = self.rend.session_circuit(id).ok_or(SendError::NoCircuit)?;
        // Check the window first: a sealed message must go out, or the
        // two ends' nonces part.
        if self.circ.window(CircuitId(k)).unwrap_or(0) == 0 {
            return Err(SendError::NoCredit);
        }
        let sealed = self
            .rend
            .seal(self.now_ms, id, bytes)
            .ok_or(SendError::NoCircuit)?;
        circuit_parts!(self, cx, w, circ);
        let r = circ.send_data(&mut cx, &mut w, CircuitId(k), &sealed);
        self.settle();
        r
    }

    /// Data cells session `id` may send now.
    pub fn session_window(&self, id: SessionId) -> Option<u32> {
        let k = self.rend.session_circuit(id)?;
        self.circ.window(CircuitId(k))
    }

    /// Ends a session; [`Event::SessionClosed`] follows.
    pub fn close_session(&mut self, now: Millis, id: SessionId) {
        self.clamp(now);
        let (mut cx, p) = self.split();
        p.rend.close(&mut cx, id);
        self.settle();
    }

    // ---- transfer -----------------------------------------------------

    /// Downloads content `id` of `size` bytes (from its signed content
    /// record), holding the pieces in `have` already (a resumed download).
    /// The node searches for its providers, opens sessions to up to
    /// `max_sources` of them, and fetches missing pieces in parallel:
    /// [`Event::PieceVerified`] for each piece, [`Event::SourceDropped`]
    /// for sources that lie or stall, [`Event::DownloadDone`] at the end.
    pub fn download(
        &mut self,
        now: Millis,
        id: ContentId,
        size: u64,
        have: Bitfield,
    ) -> Result<DownloadId, DownloadStartError> {
        self.clamp(now);
        let (mut cx, p) = self.split();
        let r = p.transfer.start(&mut cx, id, size, have);
        self.settle();
        r
    }

    /// Stops a download; its sessions close.
    pub fn cancel_download(&mut self, now: Millis, d: DownloadId) -> bool {
        self.clamp(now);
        let (mut cx, p) = self.split();
        let r = p.transfer.finish(&mut cx, d);
        self.settle();
        r
    }

    /// A running download's progress: pieces held, pieces in all, and open
    /// sources.
    pub fn download_progress(&self, d: DownloadId) -> Option<(u64, u64, usize)> {
        self.transfer.progress(d)
    }

    /// As a service, answers an [`Event::PieceWanted`] with what
    /// [`crate::transfer::serve`] made (a piece with its proof, or
    /// `Missing`).
    pub fn serve_piece(&mut self, now: Millis, session: SessionId, reply: &TransferMsg) {
        self.clamp(now);
        let (mut cx, p) = self.split();
        p.transfer.serve(&mut cx, session, reply);
        self.settle();
    }

    /// Starts the rendezvous timer if it is not running.
    fn arm_rendezvous(&mut self) {
        if self.timers.get(Timer::Rendezvous).is_none() {
            self.timers.set(Timer::Rendezvous, self.now_ms);
        }
    }

    // ---- search -------------------------------------------------------

    /// Starts a search through one of our built circuits: its exit walks
    /// the overlay, and checked records come back as
    /// [`Event::SearchResults`] until [`Event::SearchDone`].
    pub fn search(&mut self, now: Millis, query: Query) -> Result<SearchId, SearchError> {
        self.clamp(now);
        let r = self.start_search(query);
        self.settle();
        r
    }

    /// Sends a search through a random built general circuit.
    pub(super) fn start_search(&mut self, query: Query) -> Result<SearchId, SearchError> {
        if self.links.no_peers() {
            return Err(SearchError::NoPeers);
        }
        let built = self.circ.built();
        if built.is_empty() {
            return Err(SearchError::NoCircuit);
        }
        // A circuit picked at random, so that searches spread over exits.
        let (circuit, hops) = built[(self.rng.next_u64() % built.len() as u64) as usize];
        let (mut cx, p) = self.split();
        let (id, bytes) = p.search.start(&mut cx, query, hops);
        circuit_parts!(self, cx, w, circ);
        circ.send_msg(&mut cx, &mut w, circuit, &CircuitMsg::Search { bytes });
        Ok(id)
    }

    /// Publishes our signed records (replacing the set published before)
    /// through our circuits, and republishes them until they expire. Their
    /// pseudonyms become our own: records they sign are never stored or
    /// served from here, nor anything about their content.
    pub fn publish(&mut self, now: Millis, records: Vec<SignedRecord>) {
        self.clamp(now);
        let (mut cx, p) = self.split();
        p.search.publish(&mut cx, records);
    }

    /// Publishes our user's rating (signed with its rater pseudonym):
    /// at the next tick, then with our records at every republication.
    pub fn rate(&mut self, now: Millis, rating: crate::rating::SignedRating) {
        self.clamp(now);
        let (mut cx, p) = self.split();
        p.search.rate(&mut cx, rating);
    }

    /// Marks a pseudonym as ours before anything is published with it.
    pub fn set_own_publisher(&mut self, id: crate::identity::PublisherId) {
        self.search.own_publisher(id);
    }

    /// How many provider records we hold as an index holder.
    pub fn providers_held(&self) -> usize {
        self.search.providers_len()
    }

    /// How many records we hold as an index holder.
    pub fn index_len(&self) -> usize {
        self.search.index_len()
    }

    /// Records we hold as an index holder (for the daemon to persist).
    pub fn index_records(&self) -> Vec<SignedRecord> {
        self.search.index_records()
    }

    /// Restores persisted index records (each is checked again; expired
    /// ones and our own are skipped). Returns how many were kept.
    pub fn restore_index(&mut self, now: Millis, records: Vec<SignedRecord>) -> usize {
        self.clamp(now);
        let (mut cx, p) = self.split();
        p.search.restore(&mut cx, records)
    }

    /// Sends one publish message through a random built circuit.
    pub(super) fn send_search(&mut self, bytes: Vec<u8>) {
        let built = self.circ.built();
        if built.is_empty() {
            return;
        }
        let (circuit, hops) = built[(self.rng.next_u64() % built.len() as u64) as usize];
        self.stats.search.circuit_cells += hops as u64;
        circuit_parts!(self, cx, w, circ);
        circ.send_msg(&mut cx, &mut w, circuit, &CircuitMsg::Search { bytes });
    }
}
