//! The local control socket between `triad` commands and the running agent.
//!
//! `$TRIAD_HOME/agent.sock`, a Unix socket. Each connection carries one request, a JSON
//! object on one line, and the agent answers with JSON lines: events, then one line with
//! `"done": true` or an `"error"`. Only the owner of the home may talk to the agent: the agent
//! checks the peer credentials of every connection (the socket's file mode is a second fence,
//! not the first). The answers are the types of [`answer`]; a command reads them with
//! [`Client::answer`] (one line) or [`Client::line`] (events, then the end).

pub mod answer;

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The socket's file name in the home.
pub const SOCKET: &str = "agent.sock";
/// The file in the home listing the agent's listen addresses, one per line.
pub const ADDRS: &str = "agent.addrs";

/// A request to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The devices of the vault and their state.
    Devices,
    /// Open a pairing window.
    Pair {
        /// The new device stores blobs and never holds the vault secret.
        storage_only: bool,
        /// How long the window stays open, in seconds.
        seconds: u64,
        /// Accept the joiner without asking.
        yes: bool,
    },
    /// The answer to a `confirm` event of a pairing.
    PairDecision {
        /// Whether to admit the joiner.
        accept: bool,
    },
    /// Push what a device lacks and wait until it acknowledged it.
    Sync {
        /// The device's name.
        device: String,
        /// Give up after this long.
        timeout_secs: u64,
    },
    /// Lend this device's stores to the caller: the agent finishes what it is doing with them,
    /// answers `{"leased": true}`, and touches them no more until the connection closes.
    Lease,
    /// Remove a device from the vault, for good, and tell every reachable device.
    RemoveDevice {
        /// The device's name.
        device: String,
    },
    /// Where this device's files stand.
    Status {
        /// List the files in these states (names as `State::parse` reads them).
        #[serde(default)]
        files: Vec<String>,
    },
    /// The state of the file versions with these content hashes (BLAKE3, hex).
    Check {
        /// The hashes.
        hashes: Vec<String>,
        /// The card or disk being checked: a protected folder on it is not counted as a copy.
        #[serde(default)]
        card: Option<std::path::PathBuf>,
    },
    /// When each device was last proven to hold its copies; with `now`, audit every device
    /// that can be reached first.
    Audit {
        /// Audit now.
        now: bool,
    },
    /// Read `config.toml` again and work by it from now on (a command changed it); answers
    /// what the agent now does.
    Reload,
    /// Remember an address of a device.
    AddAddress {
        /// The device's name.
        device: String,
        /// A multiaddress.
        addr: String,
    },
    /// Fetch these blobs from the other devices into a new store at `into` (for a restore on a
    /// device that holds no copy of them); answers how many came and from whom.
    Fetch {
        /// The blobs, in hex.
        blobs: Vec<String>,
        /// Where to make the store; must not exist yet.
        into: PathBuf,
    },
}

/// One line of an answer that streams events before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<E, A> {
    /// An event (a line with neither `done` nor `error`).
    Event(E),
    /// The final line, which says `"done": true`.
    Done(A),
    /// The request failed; nothing follows.
    Failed(answer::Failure),
}

/// The agent is not running, or the connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("the agent is not running for {home} (start it with `triad agent`)")]
    NotRunning {
        /// The home.
        home: PathBuf,
    },
    /// The connection failed.
    #[error("lost the connection to the agent")]
    Io(#[from] io::Error),
    /// The agent sent something that is not a JSON line.
    #[error("the agent sent a malformed answer")]
    Malformed(#[from] serde_json::Error),
    /// The agent closed the connection without finishing.
    #[error("the agent closed the connection")]
    Closed,
}

/// A connection to the running agent.
#[derive(Debug)]
pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the agent of the home at `home`.
    pub fn connect(home: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(home.join(SOCKET)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning { home: home.to_path_buf() }
            }
            _ => ClientError::Io(e),
        })?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client { writer: stream, reader })
    }

    /// Sends a request (or a pairing decision) as one line.
    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        Ok(())
    }

    /// The next line the agent sent.
    pub fn receive(&mut self) -> Result<serde_json::Value, ClientError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ClientError::Closed);
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// The answer to a request that answers with one line: `Ok(answer)` or, if the request
    /// failed, `Err(failure)`.
    pub fn answer<A: DeserializeOwned>(
        &mut self,
    ) -> Result<Result<A, answer::Failure>, ClientError> {
        let value = self.receive()?;
        if value.get("error").is_some() {
            return Ok(Err(serde_json::from_value(value)?));
        }
        Ok(Ok(serde_json::from_value(value)?))
    }

    /// The next line of an answer with events `E` that ends with `A`.
    pub fn line<E: DeserializeOwned, A: DeserializeOwned>(
        &mut self,
    ) -> Result<Line<E, A>, ClientError> {
        loop {
            let value = self.receive()?;
            // The framing of the protocol: an `error` or `done` line ends the answer.
            if value.get("error").is_some() {
                return Ok(Line::Failed(serde_json::from_value(value)?));
            } else if value.get("done").is_some() {
                return Ok(Line::Done(serde_json::from_value(value)?));
            }
            match serde_json::from_value(value) {
                Ok(event) => return Ok(Line::Event(event)),
                // An event of a kind this build does not know (a newer agent still running
                // after the binary was replaced): it only reports progress, so it is skipped.
                Err(e) => tracing::debug!(error = %e, "an event this build does not know"),
            }
        }
    }

    /// The final line of an answer with no events (any event line is skipped).
    pub fn done<A: DeserializeOwned>(&mut self) -> Result<Result<A, answer::Failure>, ClientError> {
        loop {
            match self.line::<serde::de::IgnoredAny, A>()? {
                Line::Event(_) => {}
                Line::Done(answer) => return Ok(Ok(answer)),
                Line::Failed(failure) => return Ok(Err(failure)),
            }
        }
    }
}
