//! Telling the outside world which process is the gateway, once it holds its listening sockets
//! (after Pingora's bootstrap, which in a graceful upgrade (`-u`) means after the old process
//! handed them over):
//!
//! - `pid_file`: Pingora writes it only when it daemonizes (`-d`). Under systemd (no `-d`) and in
//!   the foreground it is written here instead, so `scripts/reload.sh` finds the running process
//!   and can tell when the new one has taken over.
//! - systemd: when `NOTIFY_SOCKET` is set (the unit has `NotifyAccess=all`), `MAINPID=<pid>` is
//!   sent, so after a graceful upgrade started by `ExecReload=` systemd follows the new process
//!   instead of treating the old one's exit as the service's end. Harmless on a first start.

use pingora::server::configuration::ServerConf;
use std::io::Write;

/// Writes our pid to `pid_file` (unless Pingora's daemon mode did) and tells systemd our pid.
/// A pid file that cannot be written is an error: reloads would not find the process.
pub fn announce(conf: &ServerConf) -> Result<(), String> {
    let pid = std::process::id();
    if !conf.daemon {
        write_atomically(&conf.pid_file, &format!("{pid}\n"))
            .map_err(|e| {
                format!(
                    "cannot write pid_file {}: {e}; set pid_file (top level of the YAML) to a path the gateway may write, e.g. /run/cosygate/cosygate.pid under systemd",
                    conf.pid_file
                )
            })?;
    }
    if let Some(socket) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = notify_systemd(&socket, &format!("MAINPID={pid}\n")) {
            log::warn!("cannot tell systemd our pid (NOTIFY_SOCKET {socket:?}): {e}");
        }
    }
    Ok(())
}

/// Another process reading the file sees the old pid or the new one, never a half-written one.
fn write_atomically(path: &str, text: &str) -> std::io::Result<()> {
    let tmp = format!("{path}.{}.tmp", std::process::id());
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// One datagram to systemd's notification socket (a path, or `@name` for an abstract socket).
fn notify_systemd(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(std::path::Path::new(socket))?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_file_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cosygate.pid");
        let path = path.to_str().expect("utf-8 path");
        write_atomically(path, "1\n").expect("first write");
        write_atomically(path, "22\n").expect("second write");
        assert_eq!(std::fs::read_to_string(path).expect("read"), "22\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn systemd_gets_one_datagram_on_a_path_or_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        notify_systemd(path.as_os_str(), "MAINPID=42\n").expect("send");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"MAINPID=42\n");

        let name = format!("cosygate-test-{}", rand::random::<u64>());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let server = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        notify_systemd(std::ffi::OsStr::new(&format!("@{name}")), "MAINPID=7\n").expect("send");
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"MAINPID=7\n");
    }
}
