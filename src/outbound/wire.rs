//! The direct path of a plain-TCP WebSocket: one socket, written by the connection's
//! socket task (through tungstenite) and by the producers of its queue (a room's
//! delivery), one writer at a time under the queue's lock.
//!
//! Every write is all or nothing as its writer sees it: what the socket does not take
//! is kept as pending bytes, and nothing new is written before they are. So the byte
//! stream on the socket is a sequence of whole writes, each of whole WebSocket frames:
//! tungstenite hands over whole frames and never sees a partial write, and a producer
//! writes one frame. A producer writes only when the socket task is parked with nothing
//! queued and nothing pending (see [`super::State::write_direct`]); anything else is
//! queued and written by the socket task in order.
//!
//! Reads are the socket task's alone and take no lock.
//!
//! A producer writes to the descriptor with `sendmsg`, not through tokio's `TcpStream`:
//! a delivery touches the connection's queue and the kernel, and not tokio's readiness
//! state of that socket as well — at thousands of sockets per publication each touch is
//! a cache miss (tokio's `try_io` alone was about a quarter of the user time left per
//! delivery). tokio's readiness may then say "writable" when the socket is not; the
//! socket task's next write finds out and waits properly.

use super::{OutboundReceiver, Shared};
use crate::protocol::Encoded;
use bytes::{Buf, Bytes};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The write side of the socket, with what it has not taken yet.
#[derive(Debug)]
pub(super) struct Wire {
    /// The socket's descriptor. Valid while this wire is in the queue's state: the
    /// [`WireStream`] that owns the socket takes the wire out (under the queue's lock,
    /// which every writer holds) before the socket closes.
    fd: RawFd,
    /// Bytes accepted from a writer but not yet written: the rest of one write. Empty
    /// (and owning no buffer) almost always; a boxed slice, not a `Vec`, since it sits
    /// in every connection's queue and its changes are rare.
    pending: Box<[u8]>,
}

impl Wire {
    fn new(socket: &TcpStream) -> Self {
        Wire {
            fd: socket.as_raw_fd(),
            pending: Box::default(),
        }
    }

    /// Whether bytes wait to be written before anything else.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes one server WebSocket frame carrying `frame` (the caller saw nothing
    /// pending). Returns whether some of it is now pending, so that the socket task must
    /// be woken to write the rest.
    pub(super) fn write_frame(&mut self, frame: &Encoded) -> io::Result<bool> {
        let (header, header_len) = frame_header(frame);
        self.write(&header[..header_len], frame.as_bytes())
    }

    /// Writes `head` and then `body` with one system call, keeping what the socket did
    /// not take as pending. An error means nothing was written.
    fn write(&mut self, head: &[u8], body: &[u8]) -> io::Result<bool> {
        debug_assert!(self.pending.is_empty());
        let slices = [IoSlice::new(head), IoSlice::new(body)];
        // SAFETY: see `fd`: the socket is open while this wire exists.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let written = match socket2::SockRef::from(&fd).send_vectored(&slices) {
            Ok(written) => written,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
            Err(err) => return Err(err),
        };
        if written < head.len() + body.len() {
            let rest_of_head = &head[written.min(head.len())..];
            let rest_of_body = &body[written.saturating_sub(head.len())..];
            self.pending = [rest_of_head, rest_of_body].concat().into_boxed_slice();
        }
        Ok(!self.pending.is_empty())
    }

    /// Writes the pending bytes to `socket` (this wire's); ready once there are none.
    fn poll_drain(&mut self, socket: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            match socket.try_write(&self.pending) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(written) => self.pending = self.pending[written..].into(),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    ready!(socket.poll_write_ready(cx))?;
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The socket task's write: after the pending bytes, all of `buf` is taken (written,
    /// or kept as pending).
    fn poll_write(
        &mut self,
        socket: &TcpStream,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(socket, cx))?;
        self.write(buf, &[])?;
        Poll::Ready(Ok(buf.len()))
    }
}

/// The header of an unmasked, unfragmented server frame carrying `frame` (text for JSON,
/// binary for MessagePack), formatted by tungstenite as it formats its own, and its
/// length (2 to 10 bytes).
fn frame_header(frame: &Encoded) -> ([u8; 10], usize) {
    let opcode = match frame {
        Encoded::Text(_) => Data::Text,
        Encoded::Binary(_) => Data::Binary,
    };
    let header = FrameHeader {
        opcode: OpCode::Data(opcode),
        ..FrameHeader::default()
    };
    let mut bytes = [0u8; 10];
    let mut cursor = io::Cursor::new(&mut bytes[..]);
    header
        .format(frame.as_bytes().len() as u64, &mut cursor)
        .expect("an unmasked header fits in 10 bytes");
    let len = cursor.position() as usize;
    (bytes, len)
}

/// How the socket task's stream reaches the queue's lock once attached.
#[derive(Debug)]
pub struct Link(Arc<Shared>);

impl Link {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Link(shared)
    }

    /// Runs `f` on the attached wire under the queue's lock.
    fn with_wire<R>(
        &self,
        f: impl FnOnce(&mut Wire) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match self.0.lock().wire.as_mut() {
            Some(wire) => f(wire),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

/// Both variants are a pointer: the stream lives in every connection's task.
#[derive(Debug)]
enum Writer {
    /// Not attached to a queue yet: the stream's own (boxed until the attach, which
    /// follows the upgrade at once).
    Own(Box<Wire>),
    /// In the queue's state, shared with its producers.
    Shared(Link),
}

/// A plain TCP socket taken over from the HTTP server (with the bytes it had read past
/// the upgrade request), as the stream under a WebSocket whose frames producers may
/// write directly once [`WireStream::attach`] has linked it to the connection's queue.
#[derive(Debug)]
pub struct WireStream {
    socket: TcpStream,
    /// Read from the socket before the upgrade was handed over (rarely anything);
    /// returned first. Never an empty view of the HTTP server's read buffer, which
    /// would keep that buffer (kilobytes) alive for the connection's life.
    read_ahead: Option<Box<Bytes>>,
    writer: Writer,
}

impl WireStream {
    /// The stream over `socket`; `read_ahead` are bytes already read from it.
    pub fn new(socket: TcpStream, read_ahead: Bytes) -> Self {
        WireStream {
            writer: Writer::Own(Box::new(Wire::new(&socket))),
            read_ahead: (!read_ahead.is_empty()).then(|| Box::new(read_ahead)),
            socket,
        }
    }

    /// Opens the direct path: `receiver`'s producers may write frames to this socket
    /// while its socket task is parked; this stream's writes take the same lock.
    pub fn attach(&mut self, receiver: &OutboundReceiver) {
        if let Writer::Own(wire) = &mut self.writer {
            let wire = std::mem::replace(&mut **wire, Wire::new(&self.socket));
            self.writer = Writer::Shared(receiver.attach_wire(wire));
        }
    }
}

impl Drop for WireStream {
    fn drop(&mut self) {
        // Producers must not write to a socket about to be closed (its descriptor could be
        // reused by another connection's).
        if let Writer::Shared(link) = &self.writer {
            link.0.lock().wire = None;
        }
    }
}

impl AsyncRead for WireStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(ahead) = &mut this.read_ahead {
            let n = ahead.len().min(buf.remaining());
            buf.put_slice(&ahead[..n]);
            ahead.advance(n);
            if ahead.is_empty() {
                this.read_ahead = None;
            }
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(this.socket.poll_read_ready(cx))?;
            match this.socket.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for WireStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let WireStream { socket, writer, .. } = self.get_mut();
        match writer {
            Writer::Own(wire) => wire.poll_write(socket, cx, buf),
            Writer::Shared(link) => link.with_wire(|wire| wire.poll_write(socket, cx, buf)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let WireStream { socket, writer, .. } = self.get_mut();
        match writer {
            Writer::Own(wire) => wire.poll_drain(socket, cx),
            Writer::Shared(link) => link.with_wire(|wire| wire.poll_drain(socket, cx)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Poll::Ready(socket2::SockRef::from(&self.socket).shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{Items, Outbound, OutboundReceiver, Received, channel};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A connected pair: the server's stream over the accepted socket, and the client.
    async fn pair() -> (WireStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (
            WireStream::new(accepted.unwrap().0, Bytes::new()),
            client.unwrap(),
        )
    }

    /// A stream attached to a queue of `capacity` whose receiver is parked (waiting with
    /// nothing queued), as a connection's socket task is between writes.
    async fn parked(capacity: usize) -> (WireStream, TcpStream, Outbound, OutboundReceiver) {
        let (mut stream, client) = pair().await;
        let (outbound, mut receiver) = channel(capacity);
        stream.attach(&receiver);
        let waker = futures_util::task::noop_waker();
        let poll = receiver.poll_recv(&Context::from_waker(&waker), &mut Items::default());
        assert!(poll.is_pending());
        (stream, client, outbound, receiver)
    }

    /// Reads one unmasked frame: its opcode and payload.
    async fn read_frame(client: &mut TcpStream) -> (OpCode, Vec<u8>) {
        let mut head = vec![0u8; 2];
        client.read_exact(&mut head).await.unwrap();
        let extra = match head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mut rest = vec![0u8; extra];
        client.read_exact(&mut rest).await.unwrap();
        head.extend(rest);
        let (header, len) = FrameHeader::parse(&mut std::io::Cursor::new(&head))
            .unwrap()
            .unwrap();
        assert!(header.is_final && header.mask.is_none());
        let mut payload = vec![0u8; len as usize];
        client.read_exact(&mut payload).await.unwrap();
        (header.opcode, payload)
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let frame = Encoded::binary(vec![7u8; len]);
            let (header, n) = frame_header(&frame);
            assert_eq!(n, header_len, "{len} bytes");
            let mut cursor = std::io::Cursor::new(&header[..n]);
            let (parsed, parsed_len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(parsed_len, len as u64);
            assert_eq!(parsed.opcode, OpCode::Data(Data::Binary));
        }
        let (header, _) = frame_header(&Encoded::text("{}"));
        assert_eq!(header[0], 0x81);
    }

    #[tokio::test]
    async fn a_delivery_to_a_parked_socket_task_is_written_by_the_producer() {
        let (_stream, mut client, outbound, mut receiver) = parked(4).await;
        let mut batch = Items::default();
        assert!(outbound.deliver_or_evict(Encoded::text("direct")));
        assert!(!outbound.shared.lock().has_work(), "written, not queued");
        assert_eq!(
            read_frame(&mut client).await,
            (OpCode::Data(Data::Text), b"direct".to_vec())
        );

        // Acks and other replies are queued even then.
        assert!(outbound.send_or_evict(Encoded::text("ack")));
        assert_eq!(receiver.recv(&mut batch).await, Received::Items);
        assert_eq!(batch.len(), 1);
        // Not parked now: a delivery queues behind what the socket task holds.
        assert!(outbound.deliver_or_evict(Encoded::binary(vec![1, 2])));
        assert_eq!(outbound.shared.lock().items.len(), 1);
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_waits_for_the_socket_task_in_order() {
        let (stream, mut client, outbound, mut receiver) = parked(64).await;
        // A small send buffer, and a client that does not read yet: the socket fills.
        socket2::SockRef::from(&stream.socket)
            .set_send_buffer_size(4096)
            .unwrap();
        let mut batch = Items::default();

        // Deliver until one does not fit; the rest are queued behind its pending bytes.
        let big = |i: u8| Encoded::binary(vec![i; 256 * 1024]);
        assert!(outbound.deliver_or_evict(big(1)));
        assert!(outbound.shared.lock().wire.as_ref().unwrap().has_pending());
        assert!(outbound.deliver_or_evict(big(2)));
        assert!(outbound.deliver_or_evict(Encoded::binary(vec![3])));
        assert_eq!(outbound.shared.lock().items.len(), 2, "queued behind");

        // The socket task writes the rest, then the queue, while the client reads.
        let writer = tokio::spawn(async move {
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                stream,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            use futures_util::SinkExt;
            assert_eq!(receiver.recv(&mut batch).await, Received::Items);
            for item in batch {
                let crate::outbound::Item::Frame(frame) = item else {
                    panic!("a frame")
                };
                ws.feed(crate::transport::websocket::message(frame))
                    .await
                    .unwrap();
            }
            ws.flush().await.unwrap();
            (ws, receiver)
        });
        for expected in [1u8, 2, 3] {
            let (opcode, payload) = read_frame(&mut client).await;
            assert_eq!(opcode, OpCode::Data(Data::Binary));
            assert!(payload.iter().all(|b| *b == expected), "frame {expected}");
        }
        let (_ws, receiver) = writer.await.unwrap();
        assert!(!outbound.shared.lock().has_work());
        drop(receiver);
    }

    #[tokio::test]
    async fn a_closed_stream_is_never_written_by_producers() {
        let (stream, _client, outbound, _receiver) = parked(4).await;
        drop(stream);
        assert!(outbound.shared.lock().wire.is_none());
        // Queued instead (the receiver still exists), never written.
        assert!(outbound.deliver_or_evict(Encoded::text("late")));
        assert_eq!(outbound.shared.lock().items.len(), 1);
    }
}
