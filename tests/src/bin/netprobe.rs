//! Test helper: network actions a shell cannot do on its own.
//!   netprobe sendto HOST PORT    one UDP datagram with an explicit destination (sendto)
use std::net::{SocketAddr, UdpSocket};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [op, host, port] if op == "sendto" => {
            let dst: SocketAddr = format!("{host}:{port}").parse()?;
            let bind = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            UdpSocket::bind(bind)?.send_to(b"tether", dst)?;
            Ok(())
        }
        _ => anyhow::bail!("usage: netprobe sendto HOST PORT"),
    }
}
