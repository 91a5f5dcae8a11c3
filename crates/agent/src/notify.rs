//! Tells the service manager how the agent is (systemd's `Type=notify`): ready once it serves
//! every protocol and the control socket, stopping when it was asked to stop. Through the
//! datagram socket named by `$NOTIFY_SOCKET` (a path, or `@name` in Linux's abstract
//! namespace); without it, nothing is sent.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (lines such as `READY=1`, `STOPPING=1`, `STATUS=...`) to the service
/// manager, if there is one. A failure is logged, never fatal: the agent works the same.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(e) = send(path.as_bytes(), state.as_bytes()) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

fn send(path: &[u8], state: &[u8]) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match path.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state, &addr)?;
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => return Err(io::Error::other("an abstract socket name outside Linux")),
        None => {
            socket.send_to(state, std::ffi::OsStr::from_bytes(path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reaches_a_socket_by_path() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).expect("bind");
        send(path.as_os_str().as_bytes(), b"READY=1\nSTATUS=watching").expect("sent");
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=watching");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_state_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("triad-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).expect("bind");
        send(format!("@{name}").as_bytes(), b"STOPPING=1").expect("sent");
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
