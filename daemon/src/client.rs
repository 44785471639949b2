//! The client side of the control API, used by the `veil` CLI and by tests.
//! Finds the daemon through the data dir alone: `control.sock` and
//! `control.token`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use crate::api::{ApiError, Command, Progress, Reply, Request};
use crate::datadir::{DataDir, TOKEN_FILE};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon is not running or its socket cannot be reached.
    #[error("veild is not reachable at {socket} ({reason}); start it with: veild --data-dir {dir}")]
    Unreachable {
        socket: String,
        dir: String,
        reason: String,
    },
    /// The daemon answered with an error.
    #[error("{0}")]
    Api(ApiError),
    /// The connection broke or the daemon sent something unexpected.
    #[error("control connection failed: {0}")]
    Protocol(String),
}

/// Send `command` and return the final result; progress events go to
/// `on_progress` as they arrive.
pub fn call(
    dir: &DataDir,
    command: Command,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<serde_json::Value, ClientError> {
    let socket = dir.socket_path();
    let unreachable = |reason: String| ClientError::Unreachable {
        socket: socket.display().to_string(),
        dir: dir.path().display().to_string(),
        reason,
    };
    let token = match std::fs::read_to_string(dir.file(TOKEN_FILE)) {
        Ok(t) => t.trim().to_owned(),
        Err(e) => return Err(unreachable(format!("no control token: {e}"))),
    };
    let mut stream = UnixStream::connect(&socket).map_err(|e| unreachable(e.to_string()))?;
    call_on(&mut stream, token, command, on_progress)
}

/// Send one request with an explicit token on an open stream.
pub fn call_on(
    stream: &mut UnixStream,
    token: String,
    command: Command,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<serde_json::Value, ClientError> {
    let mut line = serde_json::to_vec(&Request { token, command })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    if let Err(e) = stream.write_all(&line) {
        // The daemon may have answered and closed before reading the
        // request (a `busy` refusal does): its answer says why.
        return match read_reply(stream, on_progress) {
            Err(ClientError::Protocol(_)) => Err(ClientError::Protocol(e.to_string())),
            answered => answered,
        };
    }
    read_reply(stream, on_progress)
}

/// Read answer lines until the final one.
fn read_reply(
    stream: &mut UnixStream,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<serde_json::Value, ClientError> {
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line.map_err(|e| ClientError::Protocol(e.to_string()))?;
        let reply: Reply = serde_json::from_str(&line)
            .map_err(|e| ClientError::Protocol(format!("bad reply: {e}")))?;
        match reply {
            Reply::Progress { event } => on_progress(event),
            Reply::Ok { result } => return Ok(result),
            Reply::Error { error } => return Err(ClientError::Api(error)),
        }
    }
    Err(ClientError::Protocol(
        "the daemon closed the connection without an answer".into(),
    ))
}
