//! The daemon's configuration file: TOML → [`RawConfig`] → validated
//! [`Settings`], with command-line flags taking precedence.
//!
//! See `daemon/veild.example.toml` for every setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use veil_core::path::CircuitParams;
use veil_core::pow::PowParams;

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
    /// The data dir, an absolute path (`--data-dir` and `VEIL_DATA_DIR`
    /// replace it).
    pub data_dir: Option<PathBuf>,
    /// Run on a test network: its proof of work, timers and circuit
    /// defaults.
    pub testnet: Option<bool>,
    /// Proof-of-work difficulty in leading zero bits (test networks only).
    pub pow_bits: Option<u8>,
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
    /// `--data-dir`, or `VEIL_DATA_DIR` when the flag is not given (clap
    /// merges the two).
    pub data_dir: Option<PathBuf>,
    /// `--testnet` (false: not given).
    pub testnet: bool,
    /// `--pow-bits`.
    pub pow_bits: Option<u8>,
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
    /// The data dir asked for (None: the default, `$XDG_DATA_HOME/veil`);
    /// see [`crate::datadir::DataDir::resolve`].
    pub data_dir: Option<PathBuf>,
    /// Whether this node runs on a test network (its timers, circuit
    /// defaults and proof of work).
    pub testnet: bool,
    /// The proof of work our identities carry and every peer's must meet.
    pub pow: PowParams,
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
pub fn resolve(file: RawConfig, flags: Flags) -> anyhow::Result<Settings> {
    let data_dir = match flags.data_dir {
        Some(dir) => Some(dir),
        None => file.data_dir.map(file_data_dir).transpose()?,
    };
    let testnet = flags.testnet || file.testnet.unwrap_or(false);
    let pow = match (flags.pow_bits, file.pow_bits) {
        (Some(bits), _) => pow_params("--pow-bits", bits, testnet)?,
        (None, Some(bits)) => pow_params("pow_bits", bits, testnet)?,
        (None, None) if testnet => PowParams::TESTNET,
        (None, None) => PowParams::MAINNET,
    };
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
        data_dir,
        testnet,
        pow,
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

/// The file's `data_dir`: absolute only, since a config file is read from
/// wherever the daemon was started (a service manager's working directory
/// is rarely the file's), and `~` is not expanded.
fn file_data_dir(dir: PathBuf) -> anyhow::Result<PathBuf> {
    if !dir.is_absolute() {
        bail!(
            "data_dir: {:?} is not an absolute path; give a full path such as \
             \"/home/me/.local/share/veil\" (a relative path or `~` is not expanded)",
            dir.display().to_string()
        );
    }
    Ok(dir)
}

/// The proof-of-work difficulty asked for by `source` (`--pow-bits` or
/// `pow_bits`). A difficulty is the network's, not the node's: it is both
/// what our identities carry and what we require of every peer's, so a
/// node that differs from its network either makes ids every peer rejects
/// (lower) or rejects every honest peer (higher). The real network's is
/// fixed; a test network may choose 1 to the real network's bits.
fn pow_params(source: &str, bits: u8, testnet: bool) -> anyhow::Result<PowParams> {
    let mainnet = PowParams::MAINNET.difficulty_bits;
    if !testnet {
        if bits == mainnet {
            return Ok(PowParams::MAINNET);
        }
        let effect = if bits < mainnet {
            "make ids that every peer rejects"
        } else {
            "reject every honest peer's id"
        };
        bail!(
            "{source}: the real network's proof of work is {mainnet} bits; a node asking {bits} \
             would {effect}. Another difficulty is for test networks only: add `testnet = true` \
             (or --testnet), and give every node of that network the same value"
        );
    }
    if !(1..=mainnet).contains(&bits) {
        bail!(
            "{source}: a test network's proof of work is 1 to {mainnet} bits (the real \
             network's), not {bits}"
        );
    }
    Ok(PowParams {
        difficulty_bits: bits,
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

    /// [`resolve`] with `--testnet` given (`testnet`) or not.
    fn resolve_on(file: RawConfig, flags: Flags, testnet: bool) -> anyhow::Result<Settings> {
        resolve(
            file,
            Flags {
                testnet: flags.testnet || testnet,
                ..flags
            },
        )
    }

    /// A file with these lines after `listen = "127.0.0.1:7171"`.
    fn file(text: &str) -> RawConfig {
        file_text(&format!("listen = \"127.0.0.1:7171\"\n{text}"))
    }

    fn file_text(text: &str) -> RawConfig {
        toml::from_str(text).unwrap()
    }

    fn error(file: RawConfig, flags: Flags) -> String {
        format!("{:#}", resolve_on(file, flags, true).unwrap_err())
    }

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("veild.example.toml");
        let s = resolve_on(load(&path).unwrap(), no_flags(), false).unwrap();
        assert_eq!(s.listen, "127.0.0.1:7171".parse().unwrap());
        assert_eq!(s.bootstrap.len(), 2);
        assert_eq!(s.circuits.hops, 3);
        assert_eq!(s.circuits.guards, 3);
        assert!(s.relay());
        assert_eq!(s.advertise, None);
        assert_eq!(s.admission, admission::Limits::DEFAULT);
        assert_eq!(s.control_timeout, DEFAULT_CONTROL_TIMEOUT);
        assert_eq!(s.control_max_connections, DEFAULT_CONTROL_CONNECTIONS);
        assert_eq!(s.upload_limit, None);
        assert_eq!(s.data_dir, None);
        assert!(!s.testnet);
        assert_eq!(s.pow, PowParams::MAINNET);
        assert_eq!(s.circuits, CircuitParams::MAINNET);
    }

    /// The example's commented-out settings (`# key = value` lines) are
    /// valid too: taken in, they set what they say.
    #[test]
    fn example_config_commented_settings_load() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("veild.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut taken = Vec::new();
        let text: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(key, _)| {
                        !key.is_empty()
                            && key
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    }) =>
                {
                    taken.push(rest.split_once(" = ").unwrap().0.to_string());
                    format!("{rest}\n")
                }
                _ => format!("{line}\n"),
            })
            .collect();
        taken.sort();
        assert_eq!(
            taken,
            [
                "advertise",
                "data_dir",
                "pow_bits",
                "testnet",
                "upload_limit_kib_s"
            ]
        );
        let s = resolve(file_text(&text), no_flags()).unwrap();
        assert_eq!(s.data_dir, Some(PathBuf::from("/home/me/veil-data")));
        assert!(s.testnet);
        assert_eq!(s.pow, PowParams { difficulty_bits: 8 });
        assert_eq!(s.advertise, Some("203.0.113.7:7171".parse().unwrap()));
        assert_eq!(s.upload_limit, Some(4096 * 1024));
        // The [circuits] table names every circuit default it sets, so the
        // testnet's own do not show through.
        assert_eq!(s.circuits.hops, 3);
        assert_eq!(s.circuits.guard_min_age_ms, 3_600_000);
        assert!(s.relay());
    }

    #[test]
    fn data_dir_testnet_and_pow_bits_come_from_the_file_and_flags_override_them() {
        let text = "data_dir = \"/srv/veil\"\ntestnet = true\npow_bits = 12\n";
        let s = resolve(file(text), no_flags()).unwrap();
        assert_eq!(s.data_dir, Some(PathBuf::from("/srv/veil")));
        assert!(s.testnet);
        assert_eq!(s.pow.difficulty_bits, 12);
        // testnet = true brings the testnet's circuit defaults.
        assert_eq!(s.circuits, CircuitParams::TESTNET);
        // --data-dir (or VEIL_DATA_DIR, which clap puts in the same
        // flag) replaces the file's, and may be relative (to the
        // working directory, as on the command line).
        let flags = Flags {
            data_dir: Some(PathBuf::from("rel/dir")),
            ..Flags::default()
        };
        let s = resolve(file(text), flags).unwrap();
        assert_eq!(s.data_dir, Some(PathBuf::from("rel/dir")));
        // --pow-bits replaces the file's.
        let flags = Flags {
            pow_bits: Some(5),
            ..Flags::default()
        };
        assert_eq!(resolve(file(text), flags).unwrap().pow.difficulty_bits, 5);
        // --testnet replaces the file's `testnet = false`, and with it the
        // defaults: the testnet's proof of work and circuits.
        let flags = Flags {
            testnet: true,
            ..Flags::default()
        };
        let s = resolve(file("testnet = false\n"), flags).unwrap();
        assert!(s.testnet);
        assert_eq!(s.pow, PowParams::TESTNET);
        assert_eq!(s.circuits, CircuitParams::TESTNET);
        // And --pow-bits on a network that --testnet made a test network.
        let flags = Flags {
            testnet: true,
            pow_bits: Some(3),
            ..Flags::default()
        };
        let s = resolve(file("testnet = false\npow_bits = 23\n"), flags).unwrap();
        assert_eq!(s.pow.difficulty_bits, 3);
        // Asking for the real network's own difficulty is allowed there.
        let s = resolve(file("pow_bits = 23\n"), no_flags()).unwrap();
        assert_eq!(s.pow, PowParams::MAINNET);
        assert!(!s.testnet);
    }

    #[test]
    fn a_changed_difficulty_off_a_test_network_and_bad_data_dirs_are_refused() {
        let real =
            |file: RawConfig, flags: Flags| format!("{:#}", resolve(file, flags).unwrap_err());
        // Lowered: our ids would be rejected by every peer.
        let e = real(file("pow_bits = 8\n"), no_flags());
        assert!(
            e.starts_with("pow_bits: the real network's proof of work is 23 bits"),
            "{e}"
        );
        assert!(e.contains("every peer rejects"), "{e}");
        assert!(e.contains("testnet = true"), "{e}");
        // Raised: we would reject every honest peer.
        let e = real(file("pow_bits = 24\n"), no_flags());
        assert!(e.contains("reject every honest peer"), "{e}");
        // The flag is named when it is the flag, even over a valid file.
        let flags = Flags {
            pow_bits: Some(10),
            ..Flags::default()
        };
        let e = real(file("pow_bits = 23\n"), flags);
        assert!(e.starts_with("--pow-bits: "), "{e}");
        // `testnet = false` is the real network too.
        assert!(real(file("testnet = false\npow_bits = 9\n"), no_flags()).contains("pow_bits"));
        // A test network: 1 to 23 bits.
        for bits in [0, 24, 255] {
            let e = error(file(&format!("pow_bits = {bits}\n")), no_flags());
            assert_eq!(
                e,
                format!(
                    "pow_bits: a test network's proof of work is 1 to 23 bits (the real \
                     network's), not {bits}"
                )
            );
        }
        for bits in [1, 23] {
            let s = resolve_on(file(&format!("pow_bits = {bits}\n")), no_flags(), true);
            assert_eq!(s.unwrap().pow.difficulty_bits, bits);
        }
        // The parser refuses what is not a small number, or not a bool.
        assert!(toml::from_str::<RawConfig>("pow_bits = 256\n").is_err());
        assert!(toml::from_str::<RawConfig>("pow_bits = -1\n").is_err());
        assert!(toml::from_str::<RawConfig>("pow_bits = \"8\"\n").is_err());
        assert!(toml::from_str::<RawConfig>("testnet = \"yes\"\n").is_err());
        assert!(toml::from_str::<RawConfig>("data_dir = 3\n").is_err());
        // A data dir in the file is absolute.
        for rel in ["veil-data", "~/veil", "./x", ""] {
            let e = error(file(&format!("data_dir = {rel:?}\n")), no_flags());
            assert!(e.starts_with("data_dir: "), "{e}");
            assert!(e.contains("not an absolute path"), "{e}");
        }
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
            ..Flags::default()
        };
        let s = resolve_on(file, flags, false).unwrap();
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
        let s = resolve_on(file_text("advertise = \"127.0.0.1:3\"\n"), flags, false).unwrap();
        assert_eq!(s.advertise, Some(flag));
    }

    #[test]
    fn defaults_and_errors() {
        let s = resolve_on(RawConfig::default(), no_flags(), false).unwrap();
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
        let t = resolve_on(RawConfig::default(), no_flags(), true).unwrap();
        assert_eq!(t.circuits, CircuitParams::TESTNET);
        let bad = RawConfig {
            listen: Some("localhost".into()),
            ..RawConfig::default()
        };
        assert!(resolve_on(bad, no_flags(), false).is_err());
        assert!(toml::from_str::<RawConfig>("lisen = \"x\"").is_err());
    }

    #[test]
    fn circuits_table_overrides_the_network_defaults() {
        let s = resolve_on(
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
        let t = resolve_on(file("[circuits]\nhops = 1\n"), no_flags(), true).unwrap();
        assert_eq!(
            t.circuits,
            CircuitParams {
                hops: 1,
                ..CircuitParams::TESTNET
            }
        );
        assert!(t.relay());
        let relay = resolve_on(file("[circuits]\nclient_only = false\n"), no_flags(), true);
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
        let s = resolve_on(
            file_text("listen = \"0.0.0.0:7171\"\nadvertise = \"192.0.2.7:7171\"\n"),
            no_flags(),
            false,
        )
        .unwrap();
        assert!(s.relay());
        assert_eq!(s.advertise, Some("192.0.2.7:7171".parse().unwrap()));
        // A specific listen IP needs no --advertise.
        assert!(resolve_on(file(""), no_flags(), false).unwrap().relay());
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
        let s = resolve_on(
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
