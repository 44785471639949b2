//! The daemon's configuration file: TOML → [`RawConfig`] → validated
//! [`NetSettings`], with command-line flags taking precedence.
//!
//! See `daemon/veild.example.toml` for every setting.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

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
}

/// Validated network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSettings {
    /// Where to bind the UDP socket (port 0: any free port).
    pub listen: SocketAddr,
    /// Seed nodes (empty: start a network of our own).
    pub bootstrap: Vec<SocketAddr>,
}

/// Read and parse a config file.
pub fn load(path: &Path) -> anyhow::Result<RawConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is invalid", path.display()))
}

/// Merge the file with the flags (a flag given replaces the file's value)
/// and validate.
pub fn resolve(
    file: RawConfig,
    listen: Option<SocketAddr>,
    bootstrap: Vec<SocketAddr>,
) -> anyhow::Result<NetSettings> {
    let listen = match listen {
        Some(a) => a,
        None => parse_addr("listen", file.listen.as_deref().unwrap_or(DEFAULT_LISTEN))?,
    };
    let bootstrap = if bootstrap.is_empty() {
        file.bootstrap
            .iter()
            .map(|a| parse_addr("bootstrap", a))
            .collect::<anyhow::Result<_>>()?
    } else {
        bootstrap
    };
    Ok(NetSettings { listen, bootstrap })
}

fn parse_addr(key: &str, s: &str) -> anyhow::Result<SocketAddr> {
    s.parse()
        .with_context(|| format!("{key}: {s:?} is not an ADDR:PORT socket address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("veild.example.toml");
        let s = resolve(load(&path).unwrap(), None, Vec::new()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:7171".parse().unwrap());
        assert_eq!(s.bootstrap.len(), 2);
    }

    #[test]
    fn flags_override_the_file() {
        let file = RawConfig {
            listen: Some("127.0.0.1:1".into()),
            bootstrap: vec!["127.0.0.1:2".into()],
        };
        let flag: SocketAddr = "127.0.0.9:9".parse().unwrap();
        let s = resolve(file, Some(flag), vec![flag]).unwrap();
        assert_eq!(s.listen, flag);
        assert_eq!(s.bootstrap, vec![flag]);
    }

    #[test]
    fn defaults_and_errors() {
        let s = resolve(RawConfig::default(), None, Vec::new()).unwrap();
        assert_eq!(s.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(s.bootstrap.is_empty());
        let bad = RawConfig {
            listen: Some("localhost".into()),
            bootstrap: Vec::new(),
        };
        assert!(resolve(bad, None, Vec::new()).is_err());
        assert!(toml::from_str::<RawConfig>("lisen = \"x\"").is_err());
    }
}
