//! QUIC transport setup for peer links: the quinn endpoint, its TLS
//! configuration, and the channel binding that ties Noise to a connection.
//!
//! **Boundary:** TLS here only encrypts and carries the connection; it does
//! not authenticate anyone. Every process makes a throwaway Ed25519 key and
//! presents it as an RFC 7250 raw public key (no certificate, no names, no
//! SNI); the client accepts any server key but still checks the handshake
//! signature with it. Peers are authenticated by the Noise handshake inside
//! the first stream (`veil_core::link`), whose prologue is the connection's
//! TLS keying-material exporter ([`binding`]). A relay that splices two TLS
//! connections gets two different exporters, so the Noise handshake fails.
//!
//! 0-RTT and session resumption are off: no application data before the
//! handshake, and no tickets that would link a client's connections.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rand::rngs::OsRng;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

/// ALPN protocol id of veil's peer links.
pub const ALPN: &[u8] = b"veil/1";

/// Exporter label of the channel binding (RFC 5705 / RFC 8446 §7.5).
pub const BINDING_LABEL: &[u8] = b"veil link binding v1";

/// Least interval between two stateless resets sent by a client-only
/// endpoint: a century, so after the first one (which [`spend_the_reset`]
/// spends on ourselves) none is ever sent. quinn 0.11 can only rate-limit
/// stateless resets, not turn them off; a much larger value would overflow
/// `Instant` arithmetic inside quinn.
const CLIENT_RESET_INTERVAL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// How long the throwaway socket of [`spend_the_reset`] waits for the
/// reset before it is closed.
const SPEND_WAIT: Duration = Duration::from_secs(2);

/// Server name given to quinn when dialling. It is never sent (SNI is off)
/// and never checked (the verifier ignores names).
const SERVER_NAME: &str = "veil";

/// The channel-binding value of a connection: 32 bytes of TLS exporter
/// output, equal on both ends of one genuine QUIC connection.
pub fn binding(conn: &quinn::Connection) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, BINDING_LABEL, b"")
        .map_err(|_| anyhow::anyhow!("TLS exporter unavailable"))?;
    Ok(out)
}

/// Whether the connection negotiated veil's ALPN.
pub fn has_veil_alpn(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == ALPN)
}

/// The server name to pass to [`quinn::Endpoint::connect`].
pub fn server_name() -> &'static str {
    SERVER_NAME
}

/// Bind a UDP socket on `listen` and make an endpoint that dials veil
/// links, and accepts them if `accept` is true.
///
/// With `accept` false (a client-only node) the endpoint has no server
/// configuration, so it never completes a handshake for anyone: quinn
/// drops packets of unknown QUIC versions without a version negotiation,
/// and would answer an Initial with a stateless reset (random-looking
/// bytes; no TLS, no ALPN), which still shows a scanner that something
/// listens there. quinn can only rate-limit those resets, so the interval
/// is set to a century ([`CLIENT_RESET_INTERVAL`]) and the one reset it
/// still allows is spent at once on a datagram from ourselves
/// ([`spend_the_reset`]): from then on the endpoint answers no unsolicited
/// packet at all. (A relay whose connection with us was forgotten is not
/// reset either; it gives up at its idle timeout.) The caller binds a
/// client-only node to a fresh port on every run, so there is no fixed
/// port to probe either (see `driver::Network::start`).
pub fn endpoint(
    listen: SocketAddr,
    idle_timeout: Duration,
    accept: bool,
) -> anyhow::Result<quinn::Endpoint> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = throwaway_key(&provider)?;
    let transport = Arc::new(transport(idle_timeout)?);

    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 unavailable")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(key),
        ));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    server.transport_config(transport.clone());

    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 unavailable")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyRawKey {
            algorithms: provider.signature_verification_algorithms,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_sni = false;
    tls.enable_early_data = false;
    tls.resumption = rustls::client::Resumption::disabled();
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    client.transport_config(transport);

    let mut endpoint = if accept {
        quinn::Endpoint::server(server, listen)
    } else {
        silent_client(listen)
    }
    .with_context(|| format!("cannot listen on UDP {listen}"))?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// A dial-only endpoint on `listen` that sends no stateless reset to
/// anyone but ourselves (see [`endpoint`]).
fn silent_client(listen: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(listen)?;
    let mut config = quinn::EndpointConfig::default();
    config.min_reset_interval(CLIENT_RESET_INTERVAL);
    let endpoint = quinn::Endpoint::new(config, None, socket, Arc::new(quinn::TokioRuntime))?;
    spend_the_reset(endpoint.local_addr()?);
    Ok(endpoint)
}

/// Spend a fresh client-only endpoint's one stateless reset on ourselves:
/// send it a QUIC v1 Initial header (quinn answers an Initial with a
/// reset when it has no server side; it does not decrypt it first) from a
/// throwaway socket, before anyone else can know the fresh port. The
/// datagram is queued on the endpoint's socket before this returns, so it
/// is the first one the endpoint handles. Best effort: a failure is logged
/// and leaves at most one reset to whoever sends the next Initial.
fn spend_the_reset(at: SocketAddr) {
    let ip = match at.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let to = SocketAddr::new(ip, at.port());
    let sent = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).and_then(|s| {
        s.send_to(&initial_header_datagram(), to)?;
        s.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(s)
    });
    match sent {
        Ok(socket) => {
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                match tokio::time::timeout(SPEND_WAIT, socket.recv(&mut buf)).await {
                    Ok(Ok(n)) => {
                        tracing::debug!(bytes = n, "client endpoint: stateless reset spent")
                    }
                    _ => tracing::debug!("client endpoint: no stateless reset came back to spend"),
                }
            });
        }
        Err(e) => tracing::debug!("client endpoint: cannot spend the stateless reset: {e}"),
    }
}

/// A 1200-byte datagram that parses as a QUIC v1 Initial packet (random
/// destination id, no token; the payload is zeros, never decrypted).
fn initial_header_datagram() -> Vec<u8> {
    const LEN: usize = 1200;
    let mut d = Vec::with_capacity(LEN);
    d.push(0xc0); // long header, fixed bit, Initial, 1-byte packet number
    d.extend_from_slice(&1u32.to_be_bytes()); // QUIC v1
    let mut dcid = [0u8; 8];
    rand::RngCore::fill_bytes(&mut OsRng, &mut dcid);
    d.push(dcid.len() as u8);
    d.extend_from_slice(&dcid);
    d.push(0); // no source id
    d.push(0); // no token
    let payload = (LEN - d.len() - 2) as u16; // after a 2-byte length
    d.extend_from_slice(&(0x4000 | payload).to_be_bytes());
    d.resize(LEN, 0);
    d
}

fn transport(idle_timeout: Duration) -> anyhow::Result<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // One bidirectional stream per link, opened by the dialler.
    t.max_concurrent_bidi_streams(1u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.datagram_receive_buffer_size(None);
    t.max_idle_timeout(Some(
        idle_timeout
            .try_into()
            .context("idle timeout out of range")?,
    ));
    t.keep_alive_interval(Some(idle_timeout / 3));
    Ok(t)
}

/// A fresh Ed25519 key for this process, as a raw-public-key "certificate".
fn throwaway_key(provider: &CryptoProvider) -> anyhow::Result<Arc<CertifiedKey>> {
    /// PKCS#8 v1 header of an Ed25519 private key (RFC 8410 §7).
    const PKCS8_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    /// SubjectPublicKeyInfo header of an Ed25519 public key (RFC 8410 §4).
    const SPKI_PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let secret = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let mut pkcs8 = PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(secret.as_bytes());
    let mut spki = SPKI_PREFIX.to_vec();
    spki.extend_from_slice(secret.verifying_key().as_bytes());
    let signer = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)))
        .context("cannot load the TLS key")?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki)],
        signer,
    )))
}

/// Accepts any server raw public key, but checks that the server signed the
/// handshake with it. Authentication is Noise's job (see the module docs).
#[derive(Debug)]
struct AnyRawKey {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyRawKey {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is enabled.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}
