//! The bidirectional control stream.
//!
//! Carries length-prefixed [`Message`]s (see `kodama_proto::message`). Reads
//! go through the incremental [`MessageDecoder`], which refuses an oversized
//! length before buffering its body, so a peer cannot make us hold more than
//! one maximum-size message plus one read chunk.

use std::time::Duration;

use iroh::endpoint::{Connection, RecvStream, SendStream};
use kodama_proto::handshake::ClientHandshake;
use kodama_proto::{Message, MessageDecoder};

use crate::error::{ControlError, HelloError};

const READ_CHUNK: usize = 16 * 1024;

/// One control stream, either side.
#[derive(Debug)]
pub struct ControlStream {
    reader: ControlReader,
    writer: ControlWriter,
}

impl ControlStream {
    /// Opens the control stream (the dialing side).
    pub async fn open(conn: &Connection) -> Result<Self, ControlError> {
        let (send, recv) = conn.open_bi().await?;
        Ok(Self::new(send, recv))
    }

    /// The client side of the handshake, the one every dialer uses (camera
    /// uplink, viewer, upstream relay, tests): opens the control stream,
    /// sends the hello and reads the server's answer within `timeout`.
    /// Returns the stream and the server's name.
    ///
    /// A server that refuses closes the connection, sometimes before its
    /// `Reject` arrives or before the stream opens: then the connection's
    /// close reason is the answer.
    pub async fn hello(
        conn: &Connection,
        mut handshake: ClientHandshake,
        timeout: Duration,
    ) -> Result<(Self, String), HelloError> {
        let closed_or =
            |e: ControlError, other: fn(ControlError) -> HelloError| match conn.close_reason() {
                Some(reason) => HelloError::Closed(reason.to_string()),
                None => other(e),
            };
        let mut control = Self::open(conn)
            .await
            .map_err(|e| closed_or(e, HelloError::Stream))?;
        control
            .send(handshake.hello())
            .await
            .map_err(|e| closed_or(e, HelloError::Stream))?;
        let reply = control
            .recv_timeout(timeout)
            .await
            .map_err(|e| closed_or(e, HelloError::NoAnswer))?;
        let server = handshake.handle(reply)?;
        Ok((control, server))
    }

    /// Accepts the control stream (the answering side).
    ///
    /// QUIC only announces a stream once data arrives on it, so the dialer
    /// must write its hello before this returns.
    pub async fn accept(conn: &Connection) -> Result<Self, ControlError> {
        let (send, recv) = conn.accept_bi().await?;
        Ok(Self::new(send, recv))
    }

    fn new(send: SendStream, recv: RecvStream) -> Self {
        // The control stream outranks every media stream.
        let _ = send.set_priority(crate::policy::send::PRIORITY_CONTROL);
        Self {
            reader: ControlReader {
                recv,
                decoder: MessageDecoder::new(),
            },
            writer: ControlWriter { send },
        }
    }

    /// Writes one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), ControlError> {
        self.writer.send(msg).await
    }

    /// Reads the next message; [`ControlError::Closed`] at a clean end of stream.
    pub async fn recv(&mut self) -> Result<Message, ControlError> {
        self.reader.recv().await
    }

    /// Reads the next message, failing after `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Message, ControlError> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| ControlError::Timeout(timeout))?
    }

    /// Splits into a reader and a writer half so they can live in separate tasks.
    pub fn split(self) -> (ControlReader, ControlWriter) {
        (self.reader, self.writer)
    }
}

/// Reading half of a control stream.
#[derive(Debug)]
pub struct ControlReader {
    recv: RecvStream,
    decoder: MessageDecoder,
}

impl ControlReader {
    /// Reads the next message; [`ControlError::Closed`] at a clean end of stream.
    pub async fn recv(&mut self) -> Result<Message, ControlError> {
        loop {
            if let Some(msg) = self.decoder.next_message()? {
                return Ok(msg);
            }
            match self.recv.read_chunk(READ_CHUNK).await? {
                Some(chunk) => self.decoder.push(&chunk),
                None => {
                    self.decoder.finish()?;
                    return Err(ControlError::Closed);
                }
            }
        }
    }
}

/// Writing half of a control stream.
#[derive(Debug)]
pub struct ControlWriter {
    send: SendStream,
}

impl ControlWriter {
    /// Writes one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), ControlError> {
        self.send.write_all(&msg.to_bytes()).await?;
        Ok(())
    }

    /// Finishes the stream (best effort).
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }
}
