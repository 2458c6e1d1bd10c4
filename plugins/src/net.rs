//! Host-owned network connections (`net`): a plugin opens TCP connections (TLS optional) to
//! granted `host:port` destinations under names it chooses, and the host keeps them — across
//! reloads and instance crashes, since they live in the plugin's context, not its instance.
//! Each connection is one task on the server's runtime that connects (private and loopback
//! addresses only with `allow_private_destinations`, checked on every resolved address), cuts
//! what it reads into lines of at most [`MAX_LINE`] bytes and queues them for the plugin's
//! net pump ([`pump`]), which calls `on-net` in order. Sending never waits on a connection: a
//! full outbox is the plugin's error, so no host call can block on the network while the
//! plugin holds its instance.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::mpsc,
};

use crate::{
    bindings::{bridge_guest::NetEvent, net, types},
    context::PluginCtx,
    http::Destination,
    plugin::{Call, Plugin},
};

/// Longest line delivered; the rest of a longer one is dropped.
pub(crate) const MAX_LINE: usize = 8 * 1024;
/// Lines a connection may have waiting to be written.
const OUTBOX: usize = 256;
/// Bytes a plugin may have queued for writing over all its connections.
const MAX_QUEUED: usize = 16 << 20;
/// Largest WebSocket message, either way.
const MAX_WS_MESSAGE: usize = 1 << 20;
/// Longest connection name.
const MAX_NAME: usize = 1024;
/// Events waiting for the plugin, across its connections; a reader waits when it is full, so a
/// plugin that is down holds its peers back through TCP rather than the host's memory.
const INBOX: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a closed connection may take to write what was queued on it.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Parses a `grants.net` entry: `host:port`, the port required.
pub(crate) fn parse_grant(grant: &str) -> Result<Destination, String> {
    let destination = Destination::parse(grant)?;
    match destination.port() {
        Some(_) => Ok(destination),
        None => Err(format!("`{grant}` needs a port (host:port)")),
    }
}

struct Conn {
    /// Tells this connection from a later one of the same name.
    generation: u64,
    outbox: mpsc::Sender<String>,
    task: tokio::task::AbortHandle,
    /// Whether it got as far as connecting (a closed one that did not is dropped at once).
    connected: Arc<AtomicBool>,
    websocket: bool,
}

/// What happened on a connection, tagged with its generation.
type Inbound = (String, u64, NetEvent);

/// A plugin's connections and the queue of what happened on them.
pub(crate) struct NetConns {
    grants: Vec<Destination>,
    max: usize,
    allow_private: bool,
    conns: Mutex<HashMap<String, Conn>>,
    generations: AtomicU64,
    /// Connection tasks alive, closing ones included: what `grants.max_connections` bounds.
    live: Arc<AtomicUsize>,
    /// Bytes queued to be written, over all connections.
    queued: Arc<AtomicUsize>,
    inbox: mpsc::Sender<Inbound>,
    /// Taken by the pump when the host starts delivering.
    receiver: Mutex<Option<mpsc::Receiver<Inbound>>>,
}

impl NetConns {
    pub(crate) fn new(grants: &[String], max: u32, allow_private: bool) -> Result<NetConns, String> {
        let grants = grants.iter().map(|g| parse_grant(g)).collect::<Result<Vec<_>, _>>()?;
        let (inbox, receiver) = mpsc::channel(INBOX);
        Ok(NetConns {
            grants,
            max: max as usize,
            allow_private,
            conns: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
            live: Arc::default(),
            queued: Arc::default(),
            inbox,
            receiver: Mutex::new(Some(receiver)),
        })
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.conns.lock().expect("conns poisoned").keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether `generation` is the open connection of that name.
    fn is_current(&self, name: &str, generation: u64) -> bool {
        self.conns.lock().expect("conns poisoned").get(name).is_some_and(|c| c.generation == generation)
    }

    /// Forgets a connection: what was sent on it is still written (for [`CLOSE_GRACE`] at
    /// most), then it closes; one that is still connecting is dropped at once. Nothing more of
    /// it reaches the plugin.
    pub(crate) fn close(&self, name: &str, runtime: &tokio::runtime::Handle) -> bool {
        let Some(Conn { task, outbox, connected, .. }) =
            self.conns.lock().expect("conns poisoned").remove(name)
        else {
            return false;
        };
        if !connected.load(Ordering::Acquire) {
            task.abort();
            return true;
        }
        // Dropping the outbox ends the connection's task once it has written what is queued.
        drop(outbox);
        runtime.spawn(async move {
            tokio::time::sleep(CLOSE_GRACE).await;
            task.abort();
        });
        true
    }

    /// Queues a line (or a WebSocket message) on a connection.
    pub(crate) fn send(&self, name: &str, line: String) -> Result<(), types::Error> {
        let conns = self.conns.lock().expect("conns poisoned");
        let conn = conns.get(name).ok_or_else(|| types::Error::NotFound(format!("no connection {name}")))?;
        let max = if conn.websocket { MAX_WS_MESSAGE } else { MAX_LINE };
        if !conn.websocket && line.contains(['\r', '\n']) {
            return Err(types::Error::Invalid("a line cannot contain line breaks".into()));
        }
        if line.len() > max {
            return Err(types::Error::Invalid(format!("a message is at most {max} bytes")));
        }
        let size = line.len() + 2;
        if self.queued.fetch_add(size, Ordering::AcqRel) + size > MAX_QUEUED {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return Err(types::Error::RateLimited(100));
        }
        conn.outbox.try_send(line).map_err(|err| {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            match err {
                mpsc::error::TrySendError::Full(_) => types::Error::RateLimited(100),
                mpsc::error::TrySendError::Closed(_) => types::Error::NotFound(format!("{name} is closing")),
            }
        })
    }
}

/// Counts a connection task as alive until it ends, however it ends (aborts included).
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's queue of lines to write; what is left in it when the connection ends no
/// longer counts as queued.
struct Outbox {
    lines: mpsc::Receiver<String>,
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    async fn next(&mut self) -> Option<String> {
        let line = self.lines.recv().await?;
        self.queued.fetch_sub(line.len() + 2, Ordering::AcqRel);
        Some(line)
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.lines.close();
        while let Ok(line) = self.lines.try_recv() {
            self.queued.fetch_sub(line.len() + 2, Ordering::AcqRel);
        }
    }
}

impl PluginCtx {
    /// `net.open`: starts a connection unless one of that name is open.
    pub(crate) fn open_connection(
        self: &Arc<Self>,
        name: String,
        destination: String,
        options: net::OpenOptions,
    ) -> Result<bool, types::Error> {
        let conns = &self.net;
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(types::Error::Invalid(format!("connection names are 1 to {MAX_NAME} bytes")));
        }
        let (host, port) = split_destination(&destination)?;
        let websocket = options.framing == net::Framing::Websocket;
        let path = options.path.clone().unwrap_or_else(|| "/".to_owned());
        if websocket
            && (!path.starts_with('/')
                || path.len() > 2048
                || path.chars().any(|c| c.is_ascii_control() || c == ' '))
        {
            return Err(types::Error::Invalid(
                "a WebSocket path starts with / and is at most 2048 printable bytes".into(),
            ));
        }
        if !conns.grants.iter().any(|d| d.allows(&host, port, port)) {
            return Err(types::Error::Denied(format!("{destination} is not granted (grants.net)")));
        }
        let mut open = conns.conns.lock().expect("conns poisoned");
        if open.contains_key(&name) {
            return Ok(false);
        }
        if conns.live.load(Ordering::Acquire) >= conns.max {
            return Err(types::Error::Quota(format!(
                "at most {} connections, closing ones included (grants.max_connections)",
                conns.max
            )));
        }
        self.take(|b| &mut b.net_opens, 1.0)?;
        conns.live.fetch_add(1, Ordering::AcqRel);
        let alive = Alive(conns.live.clone());
        let generation = conns.generations.fetch_add(1, Ordering::Relaxed);
        let (outbox, lines) = mpsc::channel(OUTBOX);
        let outgoing = Outbox { lines, queued: conns.queued.clone() };
        let connected = Arc::new(AtomicBool::new(false));
        let (ctx, task_name, flag) = (self.clone(), name.clone(), connected.clone());
        let task = self.main.spawn(async move {
            let _alive = alive;
            let reason = match connect(&ctx, &host, port, options.tls).await {
                Ok(stream) if websocket => {
                    let scheme = if options.tls { "wss" } else { "ws" };
                    let url = format!("{scheme}://{host}:{port}{path}");
                    match handshake(url, stream).await {
                        Ok(socket) => {
                            flag.store(true, Ordering::Release);
                            run_websocket(&ctx, &task_name, generation, socket, outgoing).await
                        }
                        Err(reason) => reason,
                    }
                }
                Ok(stream) => {
                    flag.store(true, Ordering::Release);
                    run(&ctx, &task_name, generation, stream, outgoing).await
                }
                Err(reason) => reason,
            };
            ctx.connection_ended(&task_name, generation, reason).await;
        });
        open.insert(name, Conn { generation, outbox, task: task.abort_handle(), connected, websocket });
        self.count("net_connections_opened", 1);
        Ok(true)
    }

    /// A connection's task ended by itself: forget it (unless it was closed or replaced) and
    /// tell the plugin.
    async fn connection_ended(&self, name: &str, generation: u64, reason: String) {
        let current = {
            let mut conns = self.net.conns.lock().expect("conns poisoned");
            match conns.get(name) {
                Some(conn) if conn.generation == generation => conns.remove(name).is_some(),
                _ => false,
            }
        };
        if current {
            self.log("info", format!("connection {name} closed: {reason}"));
            let _ = self.net.inbox.send((name.to_owned(), generation, NetEvent::Closed(reason))).await;
        }
    }
}

fn split_destination(destination: &str) -> Result<(String, u16), types::Error> {
    let invalid = || types::Error::Invalid(format!("`{destination}` is not host:port"));
    let (host, port) = destination.rsplit_once(':').ok_or_else(invalid)?;
    let port = port.parse::<u16>().map_err(|_| invalid())?;
    if host.is_empty() {
        return Err(invalid());
    }
    Ok((host.to_ascii_lowercase(), port))
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Resolves (keeping only addresses plugins may reach), connects, and wraps in TLS if asked.
async fn connect(ctx: &PluginCtx, host: &str, port: u16, tls: bool) -> Result<Box<dyn Stream>, String> {
    let allow_private = ctx.net.allow_private;
    let attempt = async {
        let found =
            tokio::net::lookup_host((host, port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?;
        let addrs: Vec<SocketAddr> =
            found.filter(|a| allow_private || homeserver_core::net::is_public(a.ip())).collect();
        if addrs.is_empty() {
            return Err(format!("{host} has no address plugins may reach"));
        }
        let tcp = TcpStream::connect(&addrs[..])
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        if !tls {
            return Ok(Box::new(tcp) as Box<dyn Stream>);
        }
        let name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
        let stream =
            tls_connector()?.connect(name, tcp).await.map_err(|e| format!("TLS with {host}: {e}"))?;
        Ok(Box::new(stream) as Box<dyn Stream>)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("connecting to {host}:{port} timed out"))?
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    Ok(tokio_rustls::TlsConnector::from(Arc::new(crate::http::public_tls()?)))
}

/// Runs an established connection until it ends; returns why it ended. Reading is a task of
/// its own, so a line half read is never lost to a write that wins a race.
async fn run(
    ctx: &PluginCtx,
    name: &str,
    generation: u64,
    stream: Box<dyn Stream>,
    mut outgoing: Outbox,
) -> String {
    let (reader, mut writer) = tokio::io::split(stream);
    let inbox = ctx.net.inbox.clone();
    if inbox.send((name.to_owned(), generation, NetEvent::Connected)).await.is_err() {
        return "the host stopped".into();
    }
    let reader_name = name.to_owned();
    let reading = ctx.main.spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::with_capacity(512);
        loop {
            match read_line(&mut reader, &mut line).await {
                Ok(true) => {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if inbox.send((reader_name.clone(), generation, NetEvent::Message(text))).await.is_err() {
                        return "the host stopped".to_owned();
                    }
                }
                Ok(false) => return "the peer closed the connection".to_owned(),
                Err(err) => return format!("read failed: {err}"),
            }
        }
    });
    let writing = async {
        while let Some(mut text) = outgoing.next().await {
            text.push_str("\r\n");
            if let Err(err) = writer.write_all(text.as_bytes()).await {
                return format!("write failed: {err}");
            }
            ctx.count("net_lines_sent", 1);
        }
        "closed".to_owned()
    };
    until_either(reading, writing).await
}

/// Runs a connection's reader task and its writer until either ends; why it ended.
async fn until_either(
    mut reading: tokio::task::JoinHandle<String>,
    writing: impl Future<Output = String>,
) -> String {
    tokio::select! {
        read = &mut reading => read.unwrap_or_else(|e| format!("the reader failed: {e}")),
        reason = writing => {
            reading.abort();
            reason
        }
    }
}

type WebSocket = tokio_tungstenite::WebSocketStream<Box<dyn Stream>>;

/// The WebSocket opening handshake over an established connection, with the connect timeout.
async fn handshake(url: String, stream: Box<dyn Stream>) -> Result<WebSocket, String> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE))
        .max_frame_size(Some(MAX_WS_MESSAGE));
    let attempt = tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config));
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(err)) => Err(format!("WebSocket handshake with {url} failed: {err}")),
        Err(_) => Err(format!("WebSocket handshake with {url} timed out")),
    }
}

/// Runs an open WebSocket until it ends, like [`run`]: text messages in (binary ones
/// dropped), text messages out; pings are answered by the protocol layer as it reads.
async fn run_websocket(
    ctx: &PluginCtx,
    name: &str,
    generation: u64,
    socket: WebSocket,
    mut outgoing: Outbox,
) -> String {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (mut sink, mut stream) = socket.split();
    let inbox = ctx.net.inbox.clone();
    if inbox.send((name.to_owned(), generation, NetEvent::Connected)).await.is_err() {
        return "the host stopped".into();
    }
    let reader_name = name.to_owned();
    let reading = ctx.main.spawn(async move {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    let event = NetEvent::Message(text.as_str().to_owned());
                    if inbox.send((reader_name.clone(), generation, event)).await.is_err() {
                        return "the host stopped".to_owned();
                    }
                }
                Ok(Message::Close(frame)) => {
                    return match frame {
                        Some(frame) => {
                            format!("the peer closed the WebSocket ({}: {})", frame.code, frame.reason)
                        }
                        None => "the peer closed the WebSocket".to_owned(),
                    };
                }
                Ok(_) => {}
                Err(err) => return format!("read failed: {err}"),
            }
        }
        "the peer closed the connection".to_owned()
    });
    let writing = async {
        while let Some(text) = outgoing.next().await {
            if let Err(err) = sink.send(Message::text(text)).await {
                return format!("write failed: {err}");
            }
            ctx.count("net_lines_sent", 1);
        }
        let _ = sink.close().await;
        "closed".to_owned()
    };
    until_either(reading, writing).await
}

/// Reads the next line into `line` (without its `\r\n`), at most [`MAX_LINE`] bytes of it;
/// `false` at the end of the stream.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    line.clear();
    let read = (&mut *reader).take(MAX_LINE as u64).read_until(b'\n', line).await?;
    if read == 0 {
        return Ok(false);
    }
    if line.last() != Some(&b'\n') && line.len() >= MAX_LINE {
        // Too long: skip the rest of it.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let n = (&mut *reader).take(MAX_LINE as u64).read_until(b'\n', &mut rest).await?;
            if n == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(true)
}

/// Delivers what happens on the plugin's connections to `on-net`, in order, while it is callable.
pub(crate) async fn pump(plugin: Arc<Plugin>) {
    let Some(mut receiver) = plugin.ctx.net.receiver.lock().expect("receiver poisoned").take() else {
        return;
    };
    let stream = plugin.ctx.services.rooms.stream().clone();
    while let Some((name, generation, event)) = receiver.recv().await {
        if stream.is_shutting_down() {
            return;
        }
        crate::delivery::wait_until_callable(&plugin, &plugin.net_control).await;
        // What a closed or replaced connection read meanwhile is not the plugin's any more
        // (its `closed` is: it was current when it was queued).
        if !matches!(event, NetEvent::Closed(_)) && !plugin.ctx.net.is_current(&name, generation) {
            continue;
        }
        if let Err(err) = plugin.call(Call::Net(name.clone(), event)).await {
            plugin.ctx.log("warn", format!("on-net for {name} failed: {}", err.describe()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_cut_at_the_limit_and_lose_their_line_ends() {
        let long = "x".repeat(MAX_LINE + 100);
        let input = format!("PING :a\r\n{long}\r\nnext\nlast");
        let mut reader = BufReader::new(input.as_bytes());
        let mut line = Vec::new();
        assert!(read_line(&mut reader, &mut line).await.unwrap());
        assert_eq!(line, b"PING :a");
        assert!(read_line(&mut reader, &mut line).await.unwrap());
        assert_eq!(line.len(), MAX_LINE, "cut at the limit");
        assert!(read_line(&mut reader, &mut line).await.unwrap());
        assert_eq!(line, b"next", "the rest of the long line was skipped");
        assert!(read_line(&mut reader, &mut line).await.unwrap());
        assert_eq!(line, b"last");
        assert!(!read_line(&mut reader, &mut line).await.unwrap());
    }

    #[test]
    fn grants_need_a_port_and_destinations_must_be_host_port() {
        assert!(parse_grant("irc.example.org:6667").is_ok());
        assert!(parse_grant("irc.example.org").is_err());
        assert!(split_destination("irc.example.org").is_err());
        assert_eq!(split_destination("IRC.example.org:6697").unwrap(), ("irc.example.org".into(), 6697));
    }
}
