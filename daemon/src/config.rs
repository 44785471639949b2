//! The daemon's configuration file: TOML → [`RawConfig`] → validated
//! [`Settings`], with command-line flags taking precedence.
//!
//! See `daemon/veild.example.toml` for every setting.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;
use veil_core::path::CircuitParams;

/// Where peer links listen when neither a flag nor the file says.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7171";

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// UDP address for peer links, `ADDR:PORT`.
    pub listen: Option<String>,
    /// Seed nodes, `ADDR:PORT` each.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// The `[circuits]` table.
    #[serde(default)]
    pub circuits: RawCircuits,
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
    /// Where to bind the UDP socket (port 0: any free port).
    pub listen: SocketAddr,
    /// Seed nodes (empty: start a network of our own).
    pub bootstrap: Vec<SocketAddr>,
    /// Circuit and path parameters.
    pub circuits: CircuitParams,
    /// Relay for others (false: client-only).
    pub relay: bool,
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
    let relay = !(flags.client_only || raw.client_only.unwrap_or(false));
    Ok(Settings {
        listen,
        bootstrap,
        circuits,
        relay,
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

    fn file(text: &str) -> RawConfig {
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
        assert!(s.relay);
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
        };
        let flag: SocketAddr = "127.0.0.9:9".parse().unwrap();
        let flags = Flags {
            listen: Some(flag),
            bootstrap: vec![flag],
            hops: Some(4),
            client_only: true,
        };
        let s = resolve(file, flags, false).unwrap();
        assert_eq!(s.listen, flag);
        assert_eq!(s.bootstrap, vec![flag]);
        assert_eq!(s.circuits.hops, 4);
        assert!(!s.relay);
    }

    #[test]
    fn defaults_and_errors() {
        let s = resolve(RawConfig::default(), no_flags(), false).unwrap();
        assert_eq!(s.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(s.bootstrap.is_empty());
        assert_eq!(s.circuits, CircuitParams::MAINNET);
        assert!(s.relay);
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
        assert!(!s.relay);
        // Unset values keep the testnet's own.
        let t = resolve(file("[circuits]\nhops = 1\n"), no_flags(), true).unwrap();
        assert_eq!(
            t.circuits,
            CircuitParams {
                hops: 1,
                ..CircuitParams::TESTNET
            }
        );
        assert!(t.relay);
        let relay = resolve(file("[circuits]\nclient_only = false\n"), no_flags(), true);
        assert!(relay.unwrap().relay);
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
}
