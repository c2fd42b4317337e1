//! An emulated Axis RTSP metadata server (fixtures/README.md §2): Digest without qop (realm
//! `AXIS_<serial>`), the fixture's SDP with its own address, TCP-interleaved RTP in ~1400-byte
//! fragments with marker bits, the empty first document, then documents pushed by the test.
//! Fault injection: garbage between frames, a connection dropped mid-document, refused auth.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use md5::{Digest as _, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

/// The empty first document of every session.
const EMPTY_DOC: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tt:MetadataStream xmlns:tt=\"http://www.onvif.org/ver10/schema\"></tt:MetadataStream>";
const SSRC: u32 = 0x5A3C_91E7;
const NONCE: &str = "0000a41fY2958364017c3e8d06b19f5a27d4c80e6b3f9a2";

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct RtspEmulatorConfig {
    /// Serial (realm `AXIS_<serial>`).
    pub serial: String,
    /// Accepted user.
    pub username: String,
    /// Accepted password.
    pub password: String,
    /// RTP payload bytes per packet.
    pub fragment: usize,
    /// Session timeout announced in `Session` (seconds).
    pub session_timeout_s: u32,
}

impl Default for RtspEmulatorConfig {
    fn default() -> Self {
        Self {
            serial: "B8A44F3E9D21".into(),
            username: "bridge".into(),
            password: "fixture-pass".into(),
            fragment: 1400,
            session_timeout_s: 60,
        }
    }
}

#[derive(Debug, Clone)]
enum Cmd {
    Doc(Arc<str>),
    Drop,
    /// Hang: no more reading or writing, socket held open until a `Drop` or shutdown.
    Freeze,
}

#[derive(Debug)]
struct Shared {
    cfg: RtspEmulatorConfig,
    addr: SocketAddr,
    cmds: broadcast::Sender<Cmd>,
    playing: watch::Sender<usize>,
    connections: AtomicUsize,
    garbage: AtomicBool,
    drop_mid_next: AtomicBool,
    bad_auth: AtomicBool,
    requests: Mutex<Vec<String>>,
}

/// A running emulator; stops when dropped.
#[derive(Debug)]
pub struct RtspEmulator {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RtspEmulator {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.shared.cmds.send(Cmd::Drop);
    }
}

impl RtspEmulator {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start(cfg: RtspEmulatorConfig) -> io::Result<RtspEmulator> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let shared = Arc::new(Shared {
            cfg,
            addr: listener.local_addr()?,
            cmds: broadcast::channel(1024).0,
            playing: watch::channel(0).0,
            connections: AtomicUsize::new(0),
            garbage: AtomicBool::new(false),
            drop_mid_next: AtomicBool::new(false),
            bad_auth: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, s).await;
                });
            }
        });
        Ok(RtspEmulator { shared, task })
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Sends a document to every playing session.
    pub fn send_document(&self, xml: &str) {
        let _ = self.shared.cmds.send(Cmd::Doc(xml.into()));
    }

    /// Closes every connection.
    pub fn drop_connections(&self) {
        let _ = self.shared.cmds.send(Cmd::Drop);
    }

    /// Hangs every connection open now (no data, no keep-alive replies, no close), like a
    /// camera that froze or a link that died without a reset; new connections work.
    pub fn freeze_connections(&self) {
        let _ = self.shared.cmds.send(Cmd::Freeze);
    }

    /// Writes junk bytes between frames from now on.
    pub fn set_garbage_between_frames(&self, on: bool) {
        self.shared.garbage.store(on, Ordering::SeqCst);
    }

    /// The next document is cut after its first fragment and the connection closed.
    pub fn drop_mid_next_document(&self) {
        self.shared.drop_mid_next.store(true, Ordering::SeqCst);
    }

    /// Refuses every credential.
    pub fn set_bad_auth(&self, on: bool) {
        self.shared.bad_auth.store(on, Ordering::SeqCst);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Request lines received so far (`METHOD uri`).
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `n` sessions have reached PLAY (in total since start).
    pub async fn wait_for_sessions(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.playing.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|v| *v >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

fn param<'a>(h: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=");
    h.split(',').find_map(|p| {
        let v = p
            .trim()
            .strip_prefix("Digest ")
            .unwrap_or(p.trim())
            .strip_prefix(&key)?;
        Some(v.trim_matches('"'))
    })
}

/// RFC 2069 Digest check; the `uri` inside the header is the one hashed.
fn authorized(s: &Shared, method: &str, auth: Option<&str>) -> bool {
    let Some(h) = auth else { return false };
    if s.bad_auth.load(Ordering::SeqCst) {
        return false;
    }
    let realm = format!("AXIS_{}", s.cfg.serial);
    let (Some(user), Some(nonce), Some(uri), Some(resp)) = (
        param(h, "username"),
        param(h, "nonce"),
        param(h, "uri"),
        param(h, "response"),
    ) else {
        return false;
    };
    let ha1 = md5_hex(&format!("{}:{realm}:{}", s.cfg.username, s.cfg.password));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    user == s.cfg.username && nonce == NONCE && resp == md5_hex(&format!("{ha1}:{nonce}:{ha2}"))
}

struct Request {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
}

fn take_request(buf: &mut Vec<u8>) -> Option<Request> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    Some(Request {
        method: first.next()?.to_string(),
        uri: first.next().unwrap_or("").to_string(),
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
    })
}

struct Rtp {
    seq: u16,
    ts: u32,
}

async fn write_doc(
    stream: &mut TcpStream,
    s: &Shared,
    rtp: &mut Rtp,
    doc: &[u8],
    cut: bool,
) -> io::Result<()> {
    use crate::sources::rtsp::interleaved::{frame, rtp as packet};
    rtp.ts = rtp.ts.wrapping_add(9000);
    let chunks: Vec<&[u8]> = doc.chunks(s.cfg.fragment.max(1)).collect();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        if cut && last {
            stream.write_all(&out).await?;
            return Err(io::Error::other("dropped mid-document"));
        }
        out.extend(frame(0, &packet(last, rtp.seq, rtp.ts, SSRC, c)));
        rtp.seq = rtp.seq.wrapping_add(1);
        if s.garbage.load(Ordering::SeqCst) {
            out.extend_from_slice(b"\r\nGARBAGE\x00\xff\x01 junk\r\n");
        }
    }
    stream.write_all(&out).await
}

async fn serve(mut stream: TcpStream, s: Arc<Shared>) -> io::Result<()> {
    let mut cmds = s.cmds.subscribe();
    let mut buf = Vec::new();
    let mut rbuf = [0u8; 4096];
    let mut playing = false;
    let mut rtp = Rtp {
        seq: 48211,
        ts: 1_739_254_411,
    };
    let session = "Qx7pR2vLm9WdT4bN";
    let base = format!("rtsp://{}/axis-media/media.amp", s.addr);
    loop {
        while let Some(req) = take_request(&mut buf) {
            s.requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{} {}", req.method, req.uri));
            let cseq = req.header("CSeq").unwrap_or("0").to_string();
            let mut reply = String::new();
            if req.method != "OPTIONS" && !authorized(&s, &req.method, req.header("Authorization"))
            {
                reply = format!(
                    "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Digest realm=\"AXIS_{}\", nonce=\"{NONCE}\", stale=FALSE\r\n\r\n",
                    s.cfg.serial
                );
            }
            let query = req.uri.split_once('?').map_or("", |(_, q)| q).to_string();
            let mut start_play = false;
            if reply.is_empty() {
                let extra = match req.method.as_str() {
                    "OPTIONS" => "Public: OPTIONS, DESCRIBE, ANNOUNCE, GET_PARAMETER, PAUSE, PLAY, RECORD, SETUP, SET_PARAMETER, TEARDOWN\r\n\r\n".to_string(),
                    "DESCRIBE" => {
                        let sdp = format!(
                            "v=0\r\no=- 4471936280517390627 1 IN IP4 127.0.0.1\r\ns=Session streamed with GStreamer\r\ni=rtsp-server\r\nt=0 0\r\na=tool:GStreamer\r\na=type:broadcast\r\na=range:npt=now-\r\na=control:{base}?{query}\r\nm=application 0 RTP/AVP 98\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:98 vnd.onvif.metadata/90000\r\na=ts-refclk:local\r\na=mediaclk:sender\r\na=control:{base}/stream=0?{query}\r\n"
                        );
                        format!(
                            "Content-Type: application/sdp\r\nContent-Base: {base}/\r\nServer: GStreamer RTSP server\r\nContent-Length: {}\r\n\r\n{sdp}",
                            sdp.len()
                        )
                    }
                    "SETUP" => format!(
                        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=5A3C91E7;mode=\"PLAY\"\r\nSession: {session};timeout={}\r\n\r\n",
                        s.cfg.session_timeout_s
                    ),
                    "PLAY" => {
                        start_play = true;
                        format!("RTP-Info: url={base}/stream=0?{query};seq={};rtptime={}\r\nRange: npt=now-\r\nSession: {session};timeout={}\r\n\r\n", rtp.seq, rtp.ts, s.cfg.session_timeout_s)
                    }
                    "GET_PARAMETER" => format!("Session: {session};timeout={}\r\n\r\n", s.cfg.session_timeout_s),
                    "TEARDOWN" => "\r\n".to_string(),
                    _ => String::new(),
                };
                reply = if extra.is_empty() {
                    format!("RTSP/1.0 501 Not Implemented\r\nCSeq: {cseq}\r\n\r\n")
                } else {
                    format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}")
                };
            }
            stream.write_all(reply.as_bytes()).await?;
            if req.method == "TEARDOWN" && reply.contains(" 200 ") {
                return Ok(());
            }
            if start_play && !playing {
                playing = true;
                write_doc(&mut stream, &s, &mut rtp, EMPTY_DOC.as_bytes(), false).await?;
                // An RTCP sender report on channel 1, which the client must skip.
                let mut sr = vec![0x80, 200, 0, 6];
                sr.extend(SSRC.to_be_bytes());
                sr.extend([0u8; 20]);
                stream
                    .write_all(&crate::sources::rtsp::interleaved::frame(1, &sr))
                    .await?;
                s.playing.send_modify(|n| *n += 1);
            }
        }
        tokio::select! {
            n = stream.read(&mut rbuf) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&rbuf[..n]);
                if buf.len() > 64 * 1024 {
                    return Err(io::Error::other("request too large"));
                }
            }
            cmd = cmds.recv() => match cmd {
                Ok(Cmd::Doc(d)) if playing => {
                    let cut = s.drop_mid_next.swap(false, Ordering::SeqCst);
                    write_doc(&mut stream, &s, &mut rtp, d.as_bytes(), cut).await?;
                }
                Ok(Cmd::Doc(_)) => {}
                Ok(Cmd::Freeze) => loop {
                    match cmds.recv().await {
                        Ok(Cmd::Drop) | Err(broadcast::error::RecvError::Closed) => return Ok(()),
                        _ => {}
                    }
                },
                Ok(Cmd::Drop) | Err(broadcast::error::RecvError::Closed) => return Ok(()),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
            }
        }
    }
}
