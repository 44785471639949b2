//! The daemon's configuration file: TOML → [`RawConfig`] → validated
//! [`Settings`], with command-line flags taking precedence.
//!
//! See `daemon/veild.example.toml` for every setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use veil_core::path::CircuitParams;

use crate::admission;

/// Where peer links listen when neither a flag nor the file says.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7171";

/// How long a control client has to send its request, and to take each
/// line of the answer, unless `[control] timeout_s` says otherwise.
pub const DEFAULT_CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// How many control connections are served at once unless
/// `[control] max_connections` says otherwise.
pub const DEFAULT_CONTROL_CONNECTIONS: usize = 64;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// UDP address for peer links, `ADDR:PORT`.
    pub listen: Option<String>,
    /// Address a relay advertises in its descriptor, `ADDR:PORT`.
    pub advertise: Option<String>,
    /// Seed nodes, `ADDR:PORT` each.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// The `[circuits]` table.
    #[serde(default)]
    pub circuits: RawCircuits,
    /// The `[links]` table.
    #[serde(default)]
    pub links: RawLinks,
    /// The `[control]` table.
    #[serde(default)]
    pub control: RawControl,
}

/// The `[links]` table as written: admission of inbound peer connections.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLinks {
    /// Most inbound connections pending from one IPv4 address (or IPv6
    /// /64) before they open their link stream.
    pub max_pending_per_ip: Option<usize>,
    /// Most inbound connections pending from one IPv4 /24, all its
    /// addresses together.
    pub max_pending_per_24: Option<usize>,
    /// Most inbound connections pending from one IPv6 /48, all its /64s
    /// together.
    pub max_pending_per_48: Option<usize>,
    /// Milliseconds an inbound connection has to complete its QUIC
    /// handshake (once its address is validated).
    pub quic_handshake_timeout_ms: Option<u64>,
    /// Milliseconds a connection has, after its QUIC handshake, to open
    /// its link stream.
    pub first_stream_timeout_ms: Option<u64>,
    /// Most KiB per second written to all peer links together (relay
    /// bandwidth limit; default: none).
    pub upload_limit_kib_s: Option<u64>,
}

/// The `[control]` table as written: the local control socket.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    /// Seconds a client has to send its request line, and to take each
    /// answer line.
    pub timeout_s: Option<u64>,
    /// Most control connections served at once; more are answered with an
    /// error line and closed.
    pub max_connections: Option<usize>,
}

/// The `[circuits]` table as written: each value replaces the network's
/// default (mainnet, or testnet with `--testnet`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuits {
    /// Relays per circuit, 1 to 4.
    pub hops: Option<usize>,
    /// Do not relay for others.
    pub client_only: Option<bool>,
    /// Guards in the guard list.
    pub guards: Option<usize>,
    /// Second-hop relays (vanguards-lite).
    pub vanguards: Option<usize>,
    /// IPv4 prefix length no two hops may share.
    pub prefix_v4: Option<u8>,
    /// Only relays known this long become guards (seconds).
    pub guard_min_age_s: Option<u64>,
}

/// Settings given on the command line; each replaces the file's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--advertise`.
    pub advertise: Option<SocketAddr>,
    /// `--bootstrap` (empty: not given).
    pub bootstrap: Vec<SocketAddr>,
    /// `--hops`.
    pub hops: Option<usize>,
    /// `--client-only` (false: not given).
    pub client_only: bool,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where to bind the UDP socket (port 0: any free port). A client-only
    /// node binds its IP with port 0 whatever the port here says (see
    /// [`crate::driver::Network::start`]).
    pub listen: SocketAddr,
    /// The address a relay advertises (None: the bound address if `listen`
    /// has a specific IP). Always None for a client-only node.
    pub advertise: Option<SocketAddr>,
    /// Seed nodes (empty: start a network of our own).
    pub bootstrap: Vec<SocketAddr>,
    /// Circuit and path parameters.
    pub circuits: CircuitParams,
    /// Why the node relays for nobody (None: it relays).
    pub client_only: Option<ClientOnly>,
    /// Admission of inbound peer connections.
    pub admission: admission::Limits,
    /// Most bytes per second written to all peer links (None: no limit).
    pub upload_limit: Option<u64>,
    /// Control clients must send their request, and take each answer
    /// line, within this.
    pub control_timeout: Duration,
    /// Most control connections served at once.
    pub control_max_connections: usize,
}

impl Settings {
    /// Whether the node relays for others.
    pub fn relay(&self) -> bool {
        self.client_only.is_none()
    }
}

/// Why a node runs client-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOnly {
    /// Asked for: `--client-only` or `circuits.client_only = true`.
    Asked,
    /// It listens on an unspecified address and has no address to
    /// advertise: a relay descriptor without an address is refused by
    /// every peer, so it does not relay.
    NoAddress {
        /// The listen address.
        listen: SocketAddr,
    },
}

impl fmt::Display for ClientOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientOnly::Asked => f.write_str("asked for (--client-only or circuits.client_only)"),
            ClientOnly::NoAddress { listen } => write!(
                f,
                "listening on {listen} with no address to advertise; give --advertise ADDR:PORT \
                 (or `advertise` in the config file) to relay for others"
            ),
        }
    }
}

/// Read and parse a config file.
pub fn load(path: &Path) -> anyhow::Result<RawConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is invalid", path.display()))
}

/// Merge the file with the flags (a flag given replaces the file's value)
/// over the network's defaults and validate.
pub fn resolve(file: RawConfig, flags: Flags, testnet: bool) -> anyhow::Result<Settings> {
    let listen = match flags.listen {
        Some(a) => a,
        None => parse_addr("listen", file.listen.as_deref().unwrap_or(DEFAULT_LISTEN))?,
    };
    let bootstrap = if flags.bootstrap.is_empty() {
        file.bootstrap
            .iter()
            .map(|a| parse_addr("bootstrap", a))
            .collect::<anyhow::Result<_>>()?
    } else {
        flags.bootstrap
    };
    let mut circuits = if testnet {
        CircuitParams::TESTNET
    } else {
        CircuitParams::MAINNET
    };
    let raw = file.circuits;
    let hops = flags.hops.or(raw.hops);
    if let Some(hops) = hops
        && !(1..=4).contains(&hops)
    {
        let source = if flags.hops.is_some() {
            "--hops"
        } else {
            "circuits.hops"
        };
        bail!("{source}: a circuit has 1 to 4 hops, not {hops}");
    }
    circuits.hops = hops.unwrap_or(circuits.hops);
    if let Some(n) = raw.guards {
        if n == 0 {
            bail!("circuits.guards: at least 1 guard is needed");
        }
        circuits.guards = n;
    }
    if let Some(n) = raw.vanguards {
        if n == 0 {
            bail!("circuits.vanguards: at least 1 vanguard is needed");
        }
        circuits.vanguards = n;
    }
    if let Some(bits) = raw.prefix_v4 {
        if bits > 32 {
            bail!("circuits.prefix_v4: an IPv4 prefix is 0 to 32 bits, not {bits}");
        }
        circuits.prefix_v4 = bits;
    }
    if let Some(secs) = raw.guard_min_age_s {
        circuits.guard_min_age_ms = secs
            .checked_mul(1000)
            .with_context(|| format!("circuits.guard_min_age_s: {secs} s is too long"))?;
    }
    circuits
        .validate()
        .map_err(|e| anyhow::anyhow!("[circuits]: {e}"))?;
    let asked_client_only = flags.client_only || raw.client_only.unwrap_or(false);
    let advertise = match flags.advertise {
        Some(a) => Some(("--advertise", a)),
        None => match &file.advertise {
            Some(s) => Some(("advertise", parse_addr("advertise", s)?)),
            None => None,
        },
    };
    if let Some((source, a)) = advertise {
        if a.ip().is_unspecified() || a.ip().is_multicast() || a.port() == 0 {
            bail!("{source}: {a} is not an address peers can reach (give a specific IP and port)");
        }
        if asked_client_only {
            bail!("{source}: a client-only node advertises no address; drop one of the two");
        }
    }
    let advertise = advertise.map(|(_, a)| a);
    let client_only = if asked_client_only {
        Some(ClientOnly::Asked)
    } else if advertise.is_none() && listen.ip().is_unspecified() {
        Some(ClientOnly::NoAddress { listen })
    } else {
        None
    };
    let mut admission = admission::Limits::DEFAULT;
    if let Some(n) = file.links.max_pending_per_ip {
        if n == 0 {
            bail!("links.max_pending_per_ip: at least 1 is needed, or nobody could link");
        }
        admission.max_pending_per_ip = n;
    }
    for (key, value, cap) in [
        (
            "links.max_pending_per_24",
            file.links.max_pending_per_24,
            &mut admission.max_pending_per_24,
        ),
        (
            "links.max_pending_per_48",
            file.links.max_pending_per_48,
            &mut admission.max_pending_per_48,
        ),
    ] {
        if let Some(n) = value {
            if n == 0 {
                bail!("{key}: at least 1 is needed, or nobody from there could link");
            }
            *cap = n;
        }
    }
    if let Some(ms) = file.links.quic_handshake_timeout_ms {
        if ms == 0 {
            bail!("links.quic_handshake_timeout_ms: must be above 0");
        }
        admission.quic_handshake_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = file.links.first_stream_timeout_ms {
        if ms == 0 {
            bail!("links.first_stream_timeout_ms: must be above 0");
        }
        admission.first_stream_timeout = Duration::from_millis(ms);
    }
    let upload_limit = match file.links.upload_limit_kib_s {
        Some(0) => bail!("links.upload_limit_kib_s: must be above 0 (leave it out for no limit)"),
        Some(kib) => Some(kib.saturating_mul(1024)),
        None => None,
    };
    let control_timeout = match file.control.timeout_s {
        Some(0) => bail!("control.timeout_s: must be above 0"),
        Some(secs) => Duration::from_secs(secs),
        None => DEFAULT_CONTROL_TIMEOUT,
    };
    let control_max_connections = match file.control.max_connections {
        Some(0) => {
            bail!("control.max_connections: at least 1 is needed, or `veil` could not connect")
        }
        Some(n) => n,
        None => DEFAULT_CONTROL_CONNECTIONS,
    };
    Ok(Settings {
        listen,
        advertise,
        bootstrap,
        circuits,
        client_only,
        admission,
        upload_limit,
        control_timeout,
        control_max_connections,
    })
}

fn parse_addr(key: &str, s: &str) -> anyhow::Result<SocketAddr> {
    s.parse()
        .with_context(|| format!("{key}: {s:?} is not an ADDR:PORT socket address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_flags() -> Flags {
        Flags::default()
    }

    /// A file with these lines after `listen = "127.0.0.1:7171"`.
    fn file(text: &str) -> RawConfig {
        file_text(&format!("listen = \"127.0.0.1:7171\"\n{text}"))
    }

    fn file_text(text: &str) -> RawConfig {
        toml::from_str(text).unwrap()
    }

    fn error(file: RawConfig, flags: Flags) -> String {
        format!("{:#}", resolve(file, flags, true).unwrap_err())
    }

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("veild.example.toml");
        let s = resolve(load(&path).unwrap(), no_flags(), false).unwrap();
        assert_eq!(s.listen, "127.0.0.1:7171".parse().unwrap());
        assert_eq!(s.bootstrap.len(), 2);
        assert_eq!(s.circuits.hops, 3);
        assert_eq!(s.circuits.guards, 3);
        assert!(s.relay());
        assert_eq!(s.advertise, None);
        assert_eq!(s.admission, admission::Limits::DEFAULT);
        assert_eq!(s.control_timeout, DEFAULT_CONTROL_TIMEOUT);
        assert_eq!(s.control_max_connections, DEFAULT_CONTROL_CONNECTIONS);
    }

    #[test]
    fn flags_override_the_file() {
        let file = RawConfig {
            listen: Some("127.0.0.1:1".into()),
            bootstrap: vec!["127.0.0.1:2".into()],
            circuits: RawCircuits {
                hops: Some(2),
                ..RawCircuits::default()
            },
            ..RawConfig::default()
        };
        let flag: SocketAddr = "127.0.0.9:9".parse().unwrap();
        let flags = Flags {
            listen: Some(flag),
            advertise: None,
            bootstrap: vec![flag],
            hops: Some(4),
            client_only: true,
        };
        let s = resolve(file, flags, false).unwrap();
        assert_eq!(s.listen, flag);
        assert_eq!(s.bootstrap, vec![flag]);
        assert_eq!(s.circuits.hops, 4);
        assert_eq!(s.client_only, Some(ClientOnly::Asked));
        assert!(!s.relay());
        // --advertise replaces the file's.
        let flags = Flags {
            advertise: Some(flag),
            ..Flags::default()
        };
        let s = resolve(file_text("advertise = \"127.0.0.1:3\"\n"), flags, false).unwrap();
        assert_eq!(s.advertise, Some(flag));
    }

    #[test]
    fn defaults_and_errors() {
        let s = resolve(RawConfig::default(), no_flags(), false).unwrap();
        assert_eq!(s.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(s.bootstrap.is_empty());
        assert_eq!(s.circuits, CircuitParams::MAINNET);
        // 0.0.0.0 and nothing to advertise: client-only, and saying why.
        assert_eq!(
            s.client_only,
            Some(ClientOnly::NoAddress { listen: s.listen })
        );
        assert!(s.client_only.unwrap().to_string().contains("--advertise"));
        assert_eq!(s.admission, admission::Limits::DEFAULT);
        assert_eq!(s.control_timeout, DEFAULT_CONTROL_TIMEOUT);
        assert_eq!(s.control_max_connections, DEFAULT_CONTROL_CONNECTIONS);
        let t = resolve(RawConfig::default(), no_flags(), true).unwrap();
        assert_eq!(t.circuits, CircuitParams::TESTNET);
        let bad = RawConfig {
            listen: Some("localhost".into()),
            ..RawConfig::default()
        };
        assert!(resolve(bad, no_flags(), false).is_err());
        assert!(toml::from_str::<RawConfig>("lisen = \"x\"").is_err());
    }

    #[test]
    fn circuits_table_overrides_the_network_defaults() {
        let s = resolve(
            file(
                "[circuits]\nhops = 2\nclient_only = true\nguards = 5\nvanguards = 3\n\
                 prefix_v4 = 24\nguard_min_age_s = 600\n",
            ),
            no_flags(),
            false,
        )
        .unwrap();
        assert_eq!(
            s.circuits,
            CircuitParams {
                hops: 2,
                guards: 5,
                vanguards: 3,
                prefix_v4: 24,
                guard_min_age_ms: 600_000,
                ..CircuitParams::MAINNET
            }
        );
        assert!(!s.relay());
        // Unset values keep the testnet's own.
        let t = resolve(file("[circuits]\nhops = 1\n"), no_flags(), true).unwrap();
        assert_eq!(
            t.circuits,
            CircuitParams {
                hops: 1,
                ..CircuitParams::TESTNET
            }
        );
        assert!(t.relay());
        let relay = resolve(file("[circuits]\nclient_only = false\n"), no_flags(), true);
        assert!(relay.unwrap().relay());
    }

    #[test]
    fn bad_circuit_settings_say_what_is_wrong() {
        assert_eq!(
            error(file("[circuits]\nhops = 5\n"), no_flags()),
            "circuits.hops: a circuit has 1 to 4 hops, not 5"
        );
        assert!(error(file("[circuits]\nhops = 0\n"), no_flags()).contains("not 0"));
        let flag = Flags {
            hops: Some(7),
            ..Flags::default()
        };
        // The flag wins over a valid file value, and is named in the error.
        assert_eq!(
            error(file("[circuits]\nhops = 3\n"), flag),
            "--hops: a circuit has 1 to 4 hops, not 7"
        );
        assert!(error(file("[circuits]\nguards = 0\n"), no_flags()).contains("circuits.guards"));
        assert!(
            error(file("[circuits]\nvanguards = 0\n"), no_flags()).contains("circuits.vanguards")
        );
        assert!(
            error(file("[circuits]\nprefix_v4 = 33\n"), no_flags()).contains("circuits.prefix_v4")
        );
        assert!(
            error(
                file("[circuits]\nguard_min_age_s = 9223372036854775807\n"),
                no_flags()
            )
            .contains("too long")
        );
        // Unknown keys, wrong types and negative numbers are refused by the
        // parser.
        assert!(toml::from_str::<RawConfig>("[circuits]\nhop = 3\n").is_err());
        assert!(toml::from_str::<RawConfig>("[circuits]\nhops = \"3\"\n").is_err());
        assert!(toml::from_str::<RawConfig>("[circuits]\nhops = -1\n").is_err());
        assert!(toml::from_str::<RawConfig>("[circuits]\nprefix_v4 = 300\n").is_err());
    }

    #[test]
    fn an_advertised_address_makes_a_relay_of_an_unspecified_listen() {
        let s = resolve(
            file_text("listen = \"0.0.0.0:7171\"\nadvertise = \"192.0.2.7:7171\"\n"),
            no_flags(),
            false,
        )
        .unwrap();
        assert!(s.relay());
        assert_eq!(s.advertise, Some("192.0.2.7:7171".parse().unwrap()));
        // A specific listen IP needs no --advertise.
        assert!(resolve(file(""), no_flags(), false).unwrap().relay());
        // Addresses nobody can reach are refused, and so is advertising
        // while client-only.
        for bad in ["0.0.0.0:7171", "192.0.2.7:0", "224.0.0.1:7171"] {
            let e = error(file(&format!("advertise = \"{bad}\"\n")), no_flags());
            assert!(e.starts_with("advertise:"), "{e}");
        }
        let flags = Flags {
            advertise: Some("192.0.2.7:7171".parse().unwrap()),
            client_only: true,
            ..Flags::default()
        };
        assert!(error(file(""), flags).contains("--advertise: a client-only node"));
        assert!(error(file("advertise = \"x\"\n"), no_flags()).contains("advertise"));
    }

    #[test]
    fn links_and_control_tables_set_the_limits() {
        let s = resolve(
            file(
                "[links]\nmax_pending_per_ip = 2\nmax_pending_per_24 = 6\nmax_pending_per_48 = 7\n\
                 quic_handshake_timeout_ms = 2500\nfirst_stream_timeout_ms = 1500\n\
                 upload_limit_kib_s = 512\n[control]\ntimeout_s = 5\nmax_connections = 9\n",
            ),
            no_flags(),
            false,
        )
        .unwrap();
        assert_eq!(
            s.admission,
            admission::Limits {
                max_pending_per_ip: 2,
                max_pending_per_24: 6,
                max_pending_per_48: 7,
                quic_handshake_timeout: Duration::from_millis(2500),
                first_stream_timeout: Duration::from_millis(1500),
            }
        );
        assert_eq!(s.control_timeout, Duration::from_secs(5));
        assert_eq!(s.control_max_connections, 9);
        assert_eq!(s.upload_limit, Some(512 * 1024));
        assert!(
            error(file("[links]\nupload_limit_kib_s = 0\n"), no_flags())
                .contains("links.upload_limit_kib_s")
        );
        assert!(
            error(file("[links]\nmax_pending_per_ip = 0\n"), no_flags())
                .contains("links.max_pending_per_ip")
        );
        assert!(
            error(file("[links]\nfirst_stream_timeout_ms = 0\n"), no_flags())
                .contains("links.first_stream_timeout_ms")
        );
        for key in [
            "max_pending_per_24",
            "max_pending_per_48",
            "quic_handshake_timeout_ms",
        ] {
            assert!(
                error(file(&format!("[links]\n{key} = 0\n")), no_flags())
                    .contains(&format!("links.{key}"))
            );
        }
        assert!(
            error(file("[control]\nmax_connections = 0\n"), no_flags())
                .contains("control.max_connections")
        );
        assert!(
            error(file("[control]\ntimeout_s = 0\n"), no_flags()).contains("control.timeout_s")
        );
        assert!(toml::from_str::<RawConfig>("[links]\nmax_pending = 2\n").is_err());
        assert!(toml::from_str::<RawConfig>("[control]\nread_timeout = 2\n").is_err());
    }
}
