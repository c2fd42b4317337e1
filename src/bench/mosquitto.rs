//! A Mosquitto broker started by the bench on a free loopback port, killed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::tmp::TempDir;

/// Where the broker binary is: `$MOSQUITTO`, else `/usr/sbin/mosquitto` or `/usr/bin/mosquitto`.
pub fn binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MOSQUITTO") {
        return Path::new(&p).exists().then(|| p.into());
    }
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running broker.
#[derive(Debug)]
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    dir: TempDir,
}

impl Mosquitto {
    /// Starts `bin` with anonymous access, no persistence, no queue limits, TCP_NODELAY.
    pub async fn start(bin: &Path) -> anyhow::Result<Self> {
        let dir = TempDir::new("mosquitto")?;
        let port = free_port()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nset_tcp_nodelay true\n"
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("mosquitto.log"))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut m = Self { port, child, dir };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(m);
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                bail!("mosquitto exited ({status}): {}", m.log());
            }
            if Instant::now() > end {
                bail!(
                    "mosquitto did not listen on {port} within 10 s: {}",
                    m.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
