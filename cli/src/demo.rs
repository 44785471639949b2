//! `veil demo`: one command runs a local anonymous network of real `veild`
//! processes on loopback and sends a file across it.
//!
//! The relays run on 127.1.0.1, 127.2.0.1, … (one /16 each, so circuits may
//! use them all); the sharer and the downloader come last, client-only: each
//! reaches the network only through its own guards, never links to the
//! other, and relays for nobody. The sharer shares the file; the
//! downloader finds it by name with an anonymous search and downloads it
//! over rendezvous sessions, every piece verified; the demo re-hashes the
//! result. Every daemon and the work dir are removed at the end, on
//! failure, and on Ctrl-C (SIGINT, SIGTERM or SIGHUP).
//!
//! Nothing here is protocol: the daemons do the work, driven through the
//! same control API as every other `veil` command.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use veil_daemon::api::{
    CircuitEntry, CircuitState, Command, ErrorKind, GetReport, PeerEntry, Progress, SearchReport,
    ShareReport, StatusInfo,
};
use veil_daemon::client::{self, ClientError};
use veil_daemon::datadir::{DataDir, ENV_DATA_DIR};

/// Daemons started unless asked otherwise.
pub const DEFAULT_NODES: u8 = 12;
/// Most daemons: one /16 of 127/8 each, 127.1 … 127.200.
pub const MAX_NODES: u8 = 200;
/// Size of the generated file unless asked otherwise, in MiB.
pub const DEFAULT_SIZE_MIB: u64 = 8;

/// How long stopping daemons may take before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often readiness, circuits and downloads are polled.
const POLL: Duration = Duration::from_millis(200);
/// How long each search round runs (rounds repeat until the deadline).
const SEARCH_ROUND_S: u32 = 3;
/// How long one `get` waits for providers and for each piece.
const GET_ROUND_S: u32 = 30;

/// `veil demo`'s options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Daemons to start: relays, plus one sharer and one downloader
    /// (at least the circuit length plus 2).
    #[arg(long, default_value_t = DEFAULT_NODES,
          value_parser = clap::value_parser!(u8).range(3..=i64::from(MAX_NODES)))]
    nodes: u8,
    /// The file to share and download. Default: a generated file of
    /// --size-mib random bytes.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Size of the generated file, in MiB (when no --file is given).
    #[arg(long, default_value_t = DEFAULT_SIZE_MIB,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    size_mib: u64,
    /// Directory to write the downloaded file to (created if needed).
    #[arg(long, value_name = "DIR", default_value = "veil-demo-out")]
    out: PathBuf,
    /// Relays per circuit, on both sides of the rendezvous.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=4))]
    hops: u8,
    /// Give up after this many seconds (at most a day).
    #[arg(long, default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
}

/// What a node of the demo network does.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Relays circuits for others; the first few are the bootstrap seeds.
    Relay,
    /// Client-only: shares the file.
    Sharer,
    /// Client-only: searches for the file and downloads it.
    Downloader,
}

/// One daemon of the demo network.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub role: Role,
    /// The UDP address its peer links are bound to.
    pub address: String,
    pub pid: u32,
}

/// The demo's summary (`--json` prints exactly this object).
#[derive(Debug, Serialize)]
pub struct DemoReport {
    /// BLAKE3 root of the file, as `b3sum` prints it.
    pub content_id: String,
    /// The file's published name.
    pub name: String,
    /// Where the downloaded, verified file is.
    pub output_path: String,
    pub bytes: u64,
    /// The download: from `veil get` to the verified file in place.
    pub seconds: f64,
    pub throughput_mb_s: f64,
    /// From the first verified piece to the file in place (the transfer
    /// alone, without finding the record and the providers).
    pub transfer_seconds: f64,
    /// `bytes` over `transfer_seconds`.
    pub transfer_mb_s: f64,
    /// Relays per circuit on each side of the rendezvous.
    pub hops: usize,
    /// From the start until the sharer and the downloader had circuits.
    pub setup_seconds: f64,
    /// From the share until the downloader's search found the file.
    pub search_seconds: f64,
    /// The file's place in the downloader's search results (1 = best).
    pub search_rank: usize,
    /// Sources dropped for a piece that failed verification.
    pub sources_dropped_bad: u64,
    /// Addresses the downloader had links to (its guards only).
    pub downloader_links: Vec<String>,
    /// Addresses the sharer had links to (its guards only).
    pub sharer_links: Vec<String>,
    pub total_seconds: f64,
    pub nodes: Vec<NodeInfo>,
}

/// The running daemons and the work dir, removed on drop, on failure and
/// from the signal handler.
#[derive(Debug, Default)]
struct Cleanup {
    children: Vec<Child>,
    root: Option<tempfile::TempDir>,
    /// Set by the first stop: nothing more is started after it.
    stopped: bool,
}

impl Cleanup {
    /// SIGTERM every daemon, wait for them (SIGKILL after a grace
    /// period), then remove the work dir.
    fn stop(&mut self) {
        self.stopped = true;
        for c in &self.children {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(c),
                rustix::process::Signal::TERM,
            );
        }
        let deadline = Instant::now() + STOP_GRACE;
        for c in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL / 10),
                    Ok(None) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(Some(_)) | Err(_) => break,
                }
            }
        }
        self.children.clear();
        if let Some(root) = self.root.take() {
            let path = root.path().display().to_string();
            if let Err(e) = root.close() {
                eprintln!("veil demo: cannot remove {path}: {e}");
            }
        }
    }
}

/// Stops the network when dropped: on return, on `?` and on a panic's
/// unwind (the signal handler holds the other reference, so the
/// [`Cleanup`] itself is never dropped).
struct StopOnDrop(Arc<Mutex<Cleanup>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        lock(&self.0).stop();
    }
}

fn lock(c: &Mutex<Cleanup>) -> MutexGuard<'_, Cleanup> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// A daemon of the network, as the demo drives it.
#[derive(Debug)]
struct Node {
    info: NodeInfo,
    dir: DataDir,
    log: PathBuf,
}

/// Run the demo; the network is gone when this returns, whatever happened.
pub fn run(args: DemoArgs) -> anyhow::Result<DemoReport> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    if args.nodes < args.hops + 2 {
        bail!(
            "--nodes {} is too few for {}-hop circuits: at least {} (the relays, a sharer and a downloader)",
            args.nodes,
            args.hops,
            args.hops + 2
        );
    }
    let veild = veild_path()?;
    if let Some(f) = &args.file {
        let meta = std::fs::metadata(f).with_context(|| format!("--file {}", f.display()))?;
        if !meta.is_file() {
            bail!("--file {}: not a regular file", f.display());
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create --out {}", args.out.display()))?;

    // Private: it holds the daemons' keys, logs and the generated file.
    let root = tempfile::Builder::new()
        .prefix("veil-demo-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .context("cannot create a work dir")?;
    let root_path = root.path().to_path_buf();
    eprintln!("==> work dir {}", root_path.display());
    let cleanup = Arc::new(Mutex::new(Cleanup {
        children: Vec::new(),
        root: Some(root),
        stopped: false,
    }));
    let guard = StopOnDrop(cleanup.clone());
    {
        let cleanup = cleanup.clone();
        ctrlc::set_handler(move || {
            eprintln!("\nveil demo: interrupted; stopping the network and removing its files");
            lock(&cleanup).stop();
            std::process::exit(130);
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    let result = drive(&args, &veild, &root_path, &cleanup, started, deadline);
    let stopped = Instant::now();
    drop(guard);
    match result {
        Ok(mut report) => {
            eprintln!(
                "==> stopped {} daemons and removed {} ({:.1} s)",
                report.nodes.len(),
                root_path.display(),
                stopped.elapsed().as_secs_f64()
            );
            report.total_seconds = started.elapsed().as_secs_f64();
            Ok(report)
        }
        Err(e) => Err(e),
    }
}

/// Everything between starting the daemons and stopping them.
fn drive(
    args: &DemoArgs,
    veild: &Path,
    root: &Path,
    cleanup: &Mutex<Cleanup>,
    started: Instant,
    deadline: Instant,
) -> anyhow::Result<DemoReport> {
    let mut nodes = launch(args, veild, root, cleanup)?;
    let result = exchange(args, root, cleanup, &mut nodes, started, deadline);
    if result.is_err() {
        // What the daemons said goes with the error.
        for n in &nodes {
            let tail = log_tail(&n.log, 8);
            if !tail.is_empty() {
                eprintln!(
                    "---- {:?} {} (pid {}):\n{tail}",
                    n.info.role, n.info.address, n.info.pid
                );
            }
        }
    }
    result
}

/// Start every daemon at once (seeds are retried until they answer, so
/// the order does not matter).
fn launch(
    args: &DemoArgs,
    veild: &Path,
    root: &Path,
    cleanup: &Mutex<Cleanup>,
) -> anyhow::Result<Vec<Node>> {
    let relays = args.nodes - 2;
    let relay_addrs: Vec<SocketAddr> = (1..=relays)
        .map(|i| free_udp_addr(&format!("127.{i}.0.1")))
        .collect::<anyhow::Result<_>>()?;
    let seeds: Vec<String> = relay_addrs.iter().take(3).map(|a| a.to_string()).collect();
    let seeds = seeds.join(",");
    let mut plan: Vec<(Role, String)> = relay_addrs
        .iter()
        .map(|a| (Role::Relay, a.to_string()))
        .collect();
    // Client-only nodes bind a fresh port on their IP.
    plan.push((Role::Sharer, format!("127.{}.0.1:0", relays + 1)));
    plan.push((Role::Downloader, format!("127.{}.0.1:0", relays + 2)));

    let mut nodes = Vec::new();
    for (i, (role, listen)) in plan.into_iter().enumerate() {
        let dir = root.join(format!("n{}", i + 1));
        let log = root.join(format!("n{}.log", i + 1));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Process::new(veild);
        // The kernel stops each daemon if this process dies however it
        // dies (SIGKILL included), so none outlives the demo.
        cmd.arg("--stop-with-parent")
            .arg("--testnet")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", &listen, "--bootstrap", &seeds])
            .args(["--hops", &args.hops.to_string(), "--log", "warn"])
            .env_remove(ENV_DATA_DIR)
            .env_remove("VEIL_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        if role != Role::Relay {
            cmd.arg("--client-only");
        }
        // Spawned and recorded under the lock, so that a stop from the
        // signal handler sees every daemon, and nothing starts after it.
        let pid = {
            let mut c = lock(cleanup);
            if c.stopped {
                bail!("interrupted");
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start {}", veild.display()))?;
            let pid = child.id();
            c.children.push(child);
            pid
        };
        nodes.push(Node {
            info: NodeInfo {
                role,
                address: listen,
                pid,
            },
            dir: DataDir::resolve(Some(dir))?,
            log,
        });
    }
    Ok(nodes)
}

/// Wait for the network, share, search, download, verify.
fn exchange(
    args: &DemoArgs,
    root: &Path,
    cleanup: &Mutex<Cleanup>,
    nodes: &mut [Node],
    started: Instant,
    deadline: Instant,
) -> anyhow::Result<DemoReport> {
    // 1. Every daemon answers; its bound address is the one it reports.
    let total = nodes.len();
    let mut up = 0;
    while up < total {
        let node = &mut nodes[up];
        match call::<StatusInfo>(&node.dir, Command::Status) {
            Ok(s) => {
                node.info.address = s.listen;
                up += 1;
                if up == total || up % 4 == 0 {
                    eprintln!("==> nodes up: {up}/{total}");
                }
            }
            Err(e) => {
                if let Some(status) = exited(cleanup, up) {
                    bail!(
                        "veild ({:?}) exited with {status} before it was ready:\n{}",
                        node.info.role,
                        log_tail(&node.log, 20)
                    );
                }
                wait_or_fail(deadline, || format!("daemons did not start: {e}"))?;
            }
        }
    }
    let sharer = index_of(nodes, Role::Sharer);
    let downloader = index_of(nodes, Role::Downloader);

    // 2. Both ends have a circuit; meanwhile, what each waits for.
    let mut shown = (usize::MAX, usize::MAX);
    let mut waiting = [String::new(), String::new()];
    let hops = loop {
        let s = built_circuits(&nodes[sharer].dir)?;
        let d = built_circuits(&nodes[downloader].dir)?;
        if (s.len(), d.len()) != shown {
            shown = (s.len(), d.len());
            eprintln!(
                "==> circuits built: sharer {}, downloader {}",
                shown.0, shown.1
            );
        }
        if !s.is_empty() && !d.is_empty() {
            break d.iter().map(|c| c.hops.len()).max().unwrap_or(0);
        }
        for (k, (who, i)) in [("sharer", sharer), ("downloader", downloader)]
            .into_iter()
            .enumerate()
        {
            let line = call::<StatusInfo>(&nodes[i].dir, Command::Status)?.readiness;
            if line != waiting[k] {
                eprintln!("    {who}: {line}");
                waiting[k] = line;
            }
        }
        wait_or_fail(deadline, || {
            format!(
                "the sharer and the downloader built no circuit in time (sharer {}; downloader {})",
                waiting[0], waiting[1]
            )
        })?;
    };
    let setup_seconds = started.elapsed().as_secs_f64();

    // 3. The sharer shares the file.
    let file = match &args.file {
        Some(f) => std::fs::canonicalize(f).with_context(|| format!("{}", f.display()))?,
        None => generate(root, args.size_mib)?,
    };
    let path = file
        .to_str()
        .context("the file's path is not valid UTF-8")?
        .to_string();
    let shared: ShareReport = call(&nodes[sharer].dir, Command::Share { path })?;
    let Some(entry) = shared.added.first() else {
        let why = shared
            .failed
            .first()
            .map_or("nothing was added".to_string(), |f| f.error.clone());
        bail!("the sharer could not share {}: {why}", file.display());
    };
    let (id, name, bytes) = (entry.id.clone(), entry.name.clone(), entry.size);
    eprintln!(
        "==> the sharer shares {name:?} ({bytes} bytes) as {id}; its records go out through its circuits"
    );

    // 4. The downloader searches for it by name (by id if the name has no
    //    searchable word), until it is among the results.
    let words = {
        let w = veil_core::record::keywords_from_name(&name);
        if w.is_empty() {
            id.clone()
        } else {
            w.join(" ")
        }
    };
    let shared_at = Instant::now();
    let search_rank = loop {
        eprintln!("==> the downloader searches for {words:?} through its circuit");
        let command = Command::Search {
            words: words.clone(),
            timeout_s: Some(SEARCH_ROUND_S),
            limit: None,
        };
        let mut on_progress = |p: Progress| {
            if let Progress::Result { hit } = p {
                eprintln!(
                    "    result {}: {} {:?} ({} publisher(s))",
                    hit.rank, hit.id, hit.name, hit.publishers
                );
            }
        };
        let report: SearchReport = decode(client::call(
            &nodes[downloader].dir,
            command,
            &mut on_progress,
        )?)?;
        if let Some(pos) = report.results.iter().position(|h| h.id == id) {
            break pos + 1;
        }
        let why = report.reason.as_deref().unwrap_or("not among the results");
        wait_or_fail(deadline, || {
            format!("the downloader's search never found the file ({why})")
        })?;
        eprintln!("    not found yet ({why}): the records are still spreading; searching again");
    };
    let search_seconds = shared_at.elapsed().as_secs_f64();

    // 5. It downloads it over rendezvous sessions, every piece verified.
    let dest = free_name(&args.out, &name)?;
    let dest_str = std::path::absolute(&dest)?
        .to_str()
        .context("the output path is not valid UTF-8")?
        .to_string();
    eprintln!("==> the downloader downloads {id} to {dest_str}");
    let (got, transfer): (GetReport, Option<f64>) = loop {
        let command = Command::Get {
            id: id.clone(),
            out: Some(dest_str.clone()),
            timeout_s: Some(GET_ROUND_S),
        };
        let mut bar = PieceBar::new();
        let result = client::call(&nodes[downloader].dir, command, &mut |p| bar.update(&p));
        bar.finish();
        match result {
            Ok(v) => {
                let transfer = bar.first_piece.map(|t| t.elapsed().as_secs_f64());
                break (decode(v)?, transfer);
            }
            Err(ClientError::Api(e))
                if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::NotFound) =>
            {
                wait_or_fail(deadline, || format!("the download did not complete: {e}"))?;
                eprintln!("    not yet: {e}; trying again");
            }
            Err(e) => return Err(e.into()),
        }
    };

    // 6. The bytes are the file's: re-hash what is on disk.
    let on_disk = hash_file(Path::new(&got.path))?;
    if on_disk != id || got.bytes != bytes {
        bail!(
            "the downloaded file {} hashes to {on_disk} ({} bytes), not {id} ({bytes} bytes)",
            got.path,
            got.bytes
        );
    }
    let downloader_links = links(&nodes[downloader].dir)?;
    let sharer_links = links(&nodes[sharer].dir)?;
    let sharer_ip = ip_of(&nodes[sharer].info.address);
    if downloader_links.iter().any(|a| ip_of(a) == sharer_ip) {
        bail!("the downloader has a link to the sharer's address: anonymity broken");
    }
    eprintln!(
        "==> verified: {} bytes in {:.1} s ({:.2} MB/s), BLAKE3 {on_disk}",
        got.bytes,
        got.seconds,
        mb_s(got.bytes, got.seconds)
    );
    Ok(DemoReport {
        content_id: id,
        name,
        output_path: got.path,
        bytes: got.bytes,
        seconds: got.seconds,
        throughput_mb_s: mb_s(got.bytes, got.seconds),
        transfer_seconds: transfer.unwrap_or(got.seconds),
        transfer_mb_s: mb_s(got.bytes, transfer.unwrap_or(got.seconds)),
        hops,
        setup_seconds,
        search_seconds,
        search_rank,
        sources_dropped_bad: got.sources_dropped_bad,
        downloader_links,
        sharer_links,
        total_seconds: 0.0,
        nodes: nodes.iter().map(|n| n.info.clone()).collect(),
    })
}

/// `veild`, next to this `veil` executable.
fn veild_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the veil executable")?;
    let path = exe
        .parent()
        .context("the veil executable has no directory")?
        .join("veild");
    if !path.is_file() {
        bail!(
            "veild is not next to veil (looked for {}): build both with `cargo build --release --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// A free UDP address on loopback IP `ip`.
fn free_udp_addr(ip: &str) -> anyhow::Result<SocketAddr> {
    UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .with_context(|| format!("cannot bind a UDP port on {ip} (is 127/8 loopback here?)"))
}

/// Call a daemon and decode its answer.
fn call<T: DeserializeOwned>(dir: &DataDir, command: Command) -> anyhow::Result<T> {
    decode(client::call(dir, command, &mut |_| {})?)
}

fn decode<T: DeserializeOwned>(v: serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(v).context("a daemon sent an answer this veil does not understand")
}

/// Sleep one poll interval, or fail with `why` once the deadline passed.
fn wait_or_fail(deadline: Instant, why: impl FnOnce() -> String) -> anyhow::Result<()> {
    if Instant::now() >= deadline {
        bail!("{} (gave up at the --timeout)", why());
    }
    std::thread::sleep(POLL);
    Ok(())
}

/// How the daemon at `index` exited, if it has.
fn exited(cleanup: &Mutex<Cleanup>, index: usize) -> Option<std::process::ExitStatus> {
    lock(cleanup)
        .children
        .get_mut(index)
        .and_then(|c| c.try_wait().ok().flatten())
}

fn index_of(nodes: &[Node], role: Role) -> usize {
    nodes
        .iter()
        .position(|n| n.info.role == role)
        .unwrap_or_default()
}

fn built_circuits(dir: &DataDir) -> anyhow::Result<Vec<CircuitEntry>> {
    let all: Vec<CircuitEntry> = call(dir, Command::Circuits)?;
    Ok(all
        .into_iter()
        .filter(|c| c.state == CircuitState::Built)
        .collect())
}

fn links(dir: &DataDir) -> anyhow::Result<Vec<String>> {
    let peers: Vec<PeerEntry> = call(dir, Command::Peers)?;
    Ok(peers.into_iter().map(|p| p.address).collect())
}

fn ip_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(ip, _)| ip)
}

fn mb_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds.max(1e-3)
}

/// A file of `mib` MiB of pseudo-random bytes (BLAKE3's output stream
/// from a fresh seed) with a name no earlier run used.
fn generate(root: &Path, mib: u64) -> anyhow::Result<PathBuf> {
    let seed = blake3::hash(
        format!("{}:{:?}", std::process::id(), std::time::SystemTime::now()).as_bytes(),
    );
    let name = format!("veil demo {}.bin", &seed.to_hex()[..8]);
    let path = root.join(&name);
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?,
    );
    let mut stream = blake3::Hasher::new_keyed(seed.as_bytes()).finalize_xof();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        stream.fill(&mut buf);
        out.write_all(&buf)?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("==> generated {mib} MiB of random bytes as {name:?}");
    Ok(path)
}

/// `dir/name`, or `dir/name (2)` and so on if taken (a dangling symlink
/// counts as taken: the daemon never writes through one).
fn free_name(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    for k in 1..1000 {
        let candidate = if k == 1 {
            dir.join(name)
        } else {
            dir.join(format!("{name} ({k})"))
        };
        if std::fs::symlink_metadata(&candidate).is_err() {
            return Ok(candidate);
        }
    }
    bail!("{}: no free name for {name:?}", dir.display())
}

fn hash_file(path: &Path) -> anyhow::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_mmap_rayon(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// The last `n` lines of a log file.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Download progress on stderr: a bar on a terminal, a line per tenth
/// otherwise.
struct PieceBar {
    bar: Option<indicatif::ProgressBar>,
    tenth: u64,
    /// When the first verified piece was reported.
    first_piece: Option<Instant>,
}

impl PieceBar {
    fn new() -> PieceBar {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::with_draw_target(
                Some(0),
                indicatif::ProgressDrawTarget::stderr(),
            );
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "    pieces [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        });
        PieceBar {
            bar,
            tenth: 0,
            first_piece: None,
        }
    }

    fn update(&mut self, p: &Progress) {
        match p {
            Progress::Download { held, pieces, .. } => {
                if self.first_piece.is_none() {
                    self.first_piece = Some(Instant::now());
                }
                match &self.bar {
                    Some(b) => {
                        b.set_length(*pieces);
                        b.set_position(*held);
                    }
                    None => {
                        let tenth = held * 10 / (*pieces).max(1);
                        if tenth > self.tenth {
                            self.tenth = tenth;
                            eprintln!("    pieces verified: {held}/{pieces}");
                        }
                    }
                }
            }
            Progress::Dropped { reason } => {
                eprintln!("    a source was dropped ({reason})");
            }
            _ => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
