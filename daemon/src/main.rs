//! `veild`: the veil node daemon. Runs in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;
use rand::RngCore;
use tokio::net::UnixListener;
use veil_core::identity::NodeIdentity;
use veil_core::node::Config;
use veil_daemon::config;
use veil_daemon::datadir::{
    DB_FILE, DataDir, ENV_DATA_DIR, InstanceLock, TOKEN_FILE, write_private,
};
use veil_daemon::driver::{Network, Options};
use veil_daemon::keys;
use veil_daemon::server::{Daemon, serve};
use veil_daemon::store::Store;

/// The veil node daemon: keeps the library, links to peers over QUIC,
/// answers the `veil` CLI. Runs in the foreground.
#[derive(Debug, Parser)]
#[command(name = "veild", version)]
struct Args {
    /// Data dir (keys, database, control socket) [default: `data_dir` in
    /// the config file, or $XDG_DATA_HOME/veil].
    #[arg(long, env = ENV_DATA_DIR)]
    data_dir: Option<PathBuf>,
    /// Test-network parameters: low proof-of-work difficulty and short timers.
    /// Never use on the real network [default: `testnet` in the config file,
    /// or off].
    #[arg(long)]
    testnet: bool,
    /// Proof-of-work difficulty in bits, the same for every node of a
    /// network; another than the real network's 23 only with --testnet
    /// (1 to 23) [default: 23, or 8 with --testnet, or `pow_bits` in the
    /// config file].
    #[arg(long, value_name = "BITS")]
    pow_bits: Option<u8>,
    /// UDP address for peer links (QUIC); port 0 picks a free port. A specific
    /// IP is advertised to peers; on 0.0.0.0 without --advertise the node
    /// runs client-only. [default: 0.0.0.0:7171, or `listen` in the config
    /// file]
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Address peers reach this relay at, put in its signed descriptor
    /// (e.g. the public address when listening on 0.0.0.0 or behind a
    /// forwarded port) [default: the listen address if its IP is specific,
    /// or `advertise` in the config file]
    #[arg(long, value_name = "ADDR:PORT")]
    advertise: Option<SocketAddr>,
    /// Seed nodes to join, comma-separated; may repeat. Retried until reached.
    /// Without any (here or in the config file), start a network of one's own.
    #[arg(long, value_name = "ADDR:PORT,...", value_delimiter = ',')]
    bootstrap: Vec<SocketAddr>,
    /// Relays per onion circuit, 1 to 4 [default: 3, or `circuits.hops` in
    /// the config file].
    #[arg(long, value_name = "N")]
    hops: Option<usize>,
    /// Never relay for others; only build circuits of one's own. Accepts no
    /// inbound connection, binds a fresh UDP port (the --listen IP, any
    /// port) and uses a fresh node identity on every start.
    #[arg(long)]
    client_only: bool,
    /// TOML config file (`data_dir`, `testnet`, `pow_bits`, `listen`,
    /// `advertise`, `bootstrap`, `[circuits]`, `[links]`, `[control]`);
    /// flags (and VEIL_DATA_DIR) override it. See
    /// daemon/veild.example.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax), e.g. `veil_daemon=debug`.
    /// Levels: error and warn: something failed or needs the operator;
    /// info: what the node does, never with an address, key, id, content
    /// id or query; debug: peers' addresses, node ids, content ids and
    /// paths, for debugging only (do not publish such logs); trace: finer
    /// still (each dial and handshake). The default keeps other crates at
    /// error (they may log peer addresses above that).
    #[arg(long, env = "VEIL_LOG", default_value = DEFAULT_LOG)]
    log: String,
    /// Stop (as on SIGTERM) when the process that started veild exits,
    /// however it exits: for supervisors such as `veil demo` (Linux only).
    #[arg(long)]
    stop_with_parent: bool,
    /// Print this man page, veild(1), as roff and exit, e.g.
    /// `veild --man > ~/.local/share/man/man1/veild.1`.
    #[arg(long)]
    man: bool,
}

/// The default log filter: veil's own crates at info, where nothing
/// identifying is logged; dependencies (quinn, rustls) at error, since
/// their warnings may carry a peer's address.
const DEFAULT_LOG: &str = "error,veild=info,veil_daemon=info,veil_core=info";

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.man {
        return print_man();
    }
    let filter = match tracing_subscriber::EnvFilter::try_new(&args.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "veild: --log (or VEIL_LOG) {:?} is not a log filter: {e}",
                args.log
            );
            return std::process::ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veild: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--stop-with-parent`: the kernel sends us SIGTERM (a clean stop) when
/// the process that started us exits, however it exits (Linux).
fn stop_with_parent() -> anyhow::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .context("--stop-with-parent: cannot ask for a signal on the parent's exit")?;
    // The parent may have exited before the request: we are init's now.
    if rustix::process::getppid().is_none_or(|p| p.as_raw_nonzero().get() == 1) {
        anyhow::bail!("--stop-with-parent: the process that started veild has exited");
    }
    Ok(())
}

/// `veild --man`: the man page from the flags above, so it never drifts.
fn print_man() -> std::process::ExitCode {
    use std::io::Write;
    let mut page = Vec::new();
    let written = clap_mangen::Man::new(<Args as clap::CommandFactory>::command())
        .render(&mut page)
        .and_then(|()| std::io::stdout().lock().write_all(&page));
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veild: cannot write the man page: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.stop_with_parent {
        stop_with_parent()?;
    }
    let file = match &args.config {
        Some(path) => config::load(path)?,
        None => config::RawConfig::default(),
    };
    // The file is read before the data dir is resolved: it may name the
    // data dir (which --data-dir and VEIL_DATA_DIR override).
    let flags = config::Flags {
        data_dir: args.data_dir,
        testnet: args.testnet,
        pow_bits: args.pow_bits,
        listen: args.listen,
        advertise: args.advertise,
        bootstrap: args.bootstrap,
        hops: args.hops,
        client_only: args.client_only,
    };
    let settings = config::resolve(file, flags)?;
    if let Some(why @ config::ClientOnly::NoAddress { .. }) = settings.client_only {
        tracing::warn!("running client-only (relaying for nobody): {why}");
    }
    let dir = DataDir::resolve(settings.data_dir.clone())?;
    dir.create_private()?;
    let _lock = InstanceLock::acquire(&dir)?;
    let pow = settings.pow;
    dir.claim_network(settings.testnet, pow.difficulty_bits)?;
    let relay = settings.relay();
    // A client-only node shows its guards an id that lives one run only.
    let node = if relay {
        keys::load_or_create_node(&dir, pow)?
    } else {
        keys::fresh_node(pow)
    };
    let publisher = keys::load_or_create_publisher(&dir, pow)?;
    let service = keys::load_or_create_service(&dir, pow)?;
    let store = Arc::new(Mutex::new(Store::open(&dir.file(DB_FILE))?));

    let mut token = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut token);
    let token = hex::encode(token);
    write_private(&dir.file(TOKEN_FILE), format!("{token}\n").as_bytes())
        .context("cannot write the control token")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // We hold the instance lock, so a socket file left here is stale.
        let socket = dir.socket_path();
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove stale {}", socket.display()));
            }
        }
        let mut node_config = if settings.testnet {
            Config::testnet()
        } else {
            Config::mainnet()
        };
        node_config.pow = pow;
        node_config.relay = settings.relay();
        node_config.advertised_addr = settings.advertise;
        node_config.bootstrap = settings.bootstrap;
        node_config.circuits = settings.circuits;
        let identity = NodeIdentity::from_bytes(&node.to_bytes())?;
        let options = Options {
            guard_store: Some(store.clone()),
            admission: settings.admission,
            upload_limit: settings.upload_limit,
            ..Options::default()
        };
        let network = Network::start(identity, node_config, settings.listen, options)?;
        let listener = UnixListener::bind(&socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        let mut daemon = Daemon::new(
            dir.clone(),
            node,
            publisher,
            store,
            token,
            settings.testnet,
            pow,
            network.view(),
        );
        daemon.client_only = settings.client_only.map(|why| why.to_string());
        daemon.control_timeout = settings.control_timeout;
        daemon.control_max_connections = settings.control_max_connections;
        daemon.service = std::sync::Mutex::new(Some(service));
        let daemon = Arc::new(daemon);
        // The library goes out through our circuits as soon as one is
        // built (the node holds it until then).
        veil_daemon::server::publish_library(&daemon);
        veil_daemon::server::publish_ratings(&daemon);
        veil_daemon::server::resume_downloads(daemon.clone());
        tracing::debug!(node_id = %daemon.node.node_id(), "our node id");
        tracing::debug!(data_dir = %dir.path().display(), "data dir");
        tracing::info!(relay, "veild ready");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let result = tokio::select! {
            r = serve(daemon, listener) => r.context("control socket failed"),
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
        };
        let _ = std::fs::remove_file(&socket);
        network.shutdown().await;
        tracing::info!("veild stopped");
        result
    })?;
    Ok(())
}
