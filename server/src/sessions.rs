//! Every live camera and viewer connection, so that the server can act on
//! them from outside their own tasks: close the ones whose key was removed
//! (revocation takes effect at once, not at the next reconnect) and hand an
//! admin's command (or firmware update) to a camera's session.
//!
//! A session registers when its handshake succeeds and is forgotten when its
//! [`SessionGuard`] drops. A camera that reconnects while its old connection
//! lingers has two entries; commands go to the newest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kodama_net::{codes, Connection, EndpointId};
use kodama_proto::{Command, CommandResult, Role};
use tokio::sync::{mpsc, oneshot};

use crate::updates::Updates;

/// What a camera did about a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// The camera's verdict.
    pub result: CommandResult,
    /// What it says it did.
    pub detail: String,
}

/// An admin's command on its way to a camera session.
#[derive(Debug)]
pub struct CommandRequest {
    /// What to do.
    pub command: Command,
    /// Where the camera's acknowledgement goes.
    pub reply: oneshot::Sender<CommandOutcome>,
}

/// Commands queued per camera session before `send_command` reports busy.
pub const COMMAND_QUEUE: usize = 8;

#[derive(Debug)]
struct Live {
    peer: EndpointId,
    role: Role,
    conn: Connection,
    commands: Option<mpsc::Sender<CommandRequest>>,
}

/// The registry.
#[derive(Debug)]
pub struct Sessions {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Live>>,
    updates: Arc<Updates>,
}

/// Keeps a session registered while it lives.
#[derive(Debug)]
pub struct SessionGuard {
    sessions: Arc<Sessions>,
    key: u64,
}

impl Sessions {
    /// An empty registry; camera sessions deliver `updates`' bundles.
    pub fn new(updates: Arc<Updates>) -> Arc<Self> {
        Arc::new(Self {
            next: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            updates,
        })
    }

    /// Firmware update jobs (an admin's `camera update`).
    pub fn updates(&self) -> &Arc<Updates> {
        &self.updates
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `conn` as a live session of `role`.
    pub fn register(self: &Arc<Self>, conn: &Connection, role: Role) -> SessionGuard {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            key,
            Live {
                peer: conn.remote_id(),
                role,
                conn: conn.clone(),
                commands: None,
            },
        );
        SessionGuard {
            sessions: self.clone(),
            key,
        }
    }

    /// Closes every session `allowed` no longer admits; returns who went.
    pub fn close_revoked(
        &self,
        allowed: impl Fn(&EndpointId, Role) -> bool,
    ) -> Vec<(EndpointId, Role)> {
        let mut gone = Vec::new();
        self.lock().retain(|_, live| {
            if allowed(&live.peer, live.role) {
                return true;
            }
            live.conn
                .close(codes::NOT_ALLOWED, b"removed from this server");
            gone.push((live.peer, live.role));
            false
        });
        gone
    }

    /// Closes every live session's connection with `code` and `reason`
    /// (a server shutting down says why before its endpoint goes).
    pub fn close_all(&self, code: kodama_net::VarInt, reason: &[u8]) {
        for live in self.lock().values() {
            live.conn.close(code, reason);
        }
    }

    /// Hands `command` to the newest session of `camera`.
    pub fn send_command(
        &self,
        camera: &EndpointId,
        command: Command,
    ) -> Result<oneshot::Receiver<CommandOutcome>, CommandError> {
        let sender = self
            .lock()
            .iter()
            .filter(|(_, l)| l.peer == *camera && l.role == Role::Camera)
            .filter_map(|(k, l)| l.commands.clone().map(|c| (*k, c)))
            .max_by_key(|(k, _)| *k)
            .map(|(_, c)| c)
            .ok_or(CommandError::Offline)?;
        let (reply, rx) = oneshot::channel();
        sender
            .try_send(CommandRequest { command, reply })
            .map_err(|_| CommandError::Busy)?;
        Ok(rx)
    }

    /// Live sessions of `peer`.
    pub fn count(&self, peer: &EndpointId) -> usize {
        self.lock().values().filter(|l| l.peer == *peer).count()
    }
}

/// Why a command could not be handed to a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The camera is not connected.
    #[error("the camera is not connected")]
    Offline,
    /// Its command queue is full.
    #[error("the camera has {COMMAND_QUEUE} commands waiting already")]
    Busy,
}

impl SessionGuard {
    /// Lets admins' commands reach this (camera) session.
    pub fn accept_commands(&self) -> mpsc::Receiver<CommandRequest> {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        if let Some(l) = self.sessions.lock().get_mut(&self.key) {
            l.commands = Some(tx);
        }
        rx
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.key);
    }
}
