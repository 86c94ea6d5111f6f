//! PROXY protocol v2: a load balancer's header naming the client it forwards.
//!
//! Only peers in `listen.proxy_protocol_from` send one, and from them it is mandatory: an
//! optional header would let any client that reaches the listener claim any address. The
//! header is read exactly (16 bytes, then the length they declare), so the first SMTP or
//! TLS byte after it stays in the socket.

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Addresses, Command, Header, PROTOCOL_PREFIX, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Signature, version/command, family/protocol and the 2-byte length.
const FIXED_LEN: usize = 16;
/// Addresses (at most 216 bytes, AF_UNIX) plus TLVs. AWS NLB adds a few short TLVs
/// (VPC endpoint id); far more is a broken or hostile sender, not a bigger buffer.
const MAX_BODY_LEN: usize = 1024;

/// The networks whose connections start with a header.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyPeers(pub(crate) Vec<ipnet::IpNet>);

impl ProxyPeers {
    pub(crate) fn expects_header(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.0.iter().any(|n| n.contains(&peer))
    }
}

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proxied {
    /// A client's connection: its address and port.
    Client(SocketAddr),
    /// The load balancer's own connection (a health check): the peer is who it is.
    Local,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProxyError {
    #[error("not a PROXY protocol v2 header: {0}")]
    Malformed(String),
    #[error("PROXY header declares {0} bytes of addresses and TLVs (at most {MAX_BODY_LEN})")]
    TooLong(usize),
    #[error("PROXY header for a non-TCP or non-IP connection")]
    Unsupported,
    #[error("connection closed or failed before the PROXY header was complete: {0}")]
    Io(String),
}

/// How many bytes follow the fixed part, once its 16 bytes are in. Refuses anything that
/// is not a v2 header before more is read.
pub(crate) fn body_len(fixed: &[u8; FIXED_LEN]) -> Result<usize, ProxyError> {
    match Header::try_from(&fixed[..]) {
        Ok(_) => Ok(0),
        Err(ppp::v2::ParseError::Partial(_, declared)) if declared > MAX_BODY_LEN => {
            Err(ProxyError::TooLong(declared))
        }
        Err(ppp::v2::ParseError::Partial(_, declared)) => Ok(declared),
        Err(e) => Err(ProxyError::Malformed(e.to_string())),
    }
}

/// The client a complete header names.
pub(crate) fn parse(header: &[u8]) -> Result<Proxied, ProxyError> {
    let header = Header::try_from(header).map_err(|e| ProxyError::Malformed(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(Proxied::Local);
    }
    if header.protocol != Protocol::Stream {
        return Err(ProxyError::Unsupported);
    }
    match header.addresses {
        Addresses::IPv4(a) => Ok(Proxied::Client(SocketAddr::from((
            a.source_address,
            a.source_port,
        )))),
        Addresses::IPv6(a) => Ok(Proxied::Client(SocketAddr::from((
            a.source_address,
            a.source_port,
        )))),
        Addresses::Unspecified | Addresses::Unix(_) => Err(ProxyError::Unsupported),
    }
}

/// Reads one header off `reader`, and not a byte more.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Proxied, ProxyError> {
    let io = |e: std::io::Error| ProxyError::Io(e.to_string());
    let mut fixed = [0u8; FIXED_LEN];
    let mut have = 0;
    while have < FIXED_LEN {
        let n = reader.read(&mut fixed[have..]).await.map_err(io)?;
        if n == 0 {
            return Err(ProxyError::Io("connection closed".into()));
        }
        have += n;
        // Refuse a sender that is not speaking PROXY v2 at its first wrong byte, not
        // after a command timeout spent waiting for 16 bytes a short line never makes.
        let signature = &fixed[..have.min(PROTOCOL_PREFIX.len())];
        if !PROTOCOL_PREFIX.starts_with(signature) {
            return Err(ProxyError::Malformed("no v2 signature".into()));
        }
    }
    let len = body_len(&fixed)?;
    let mut header = Vec::with_capacity(FIXED_LEN + len);
    header.extend_from_slice(&fixed);
    header.resize(FIXED_LEN + len, 0);
    reader
        .read_exact(&mut header[FIXED_LEN..])
        .await
        .map_err(io)?;
    parse(&header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Type, Version};

    fn header(command: Command, protocol: Protocol, addresses: Addresses) -> Vec<u8> {
        Builder::with_addresses(Version::Two | command, protocol, addresses)
            .build()
            .expect("build")
    }

    fn tcp(client: &str, lb: &str) -> Vec<u8> {
        let pair = (
            client.parse::<SocketAddr>().expect("client"),
            lb.parse::<SocketAddr>().expect("lb"),
        );
        header(Command::Proxy, Protocol::Stream, pair.into())
    }

    #[tokio::test]
    async fn the_client_address_is_read_and_the_smtp_bytes_after_it_stay_unread() {
        for (client, lb) in [
            ("203.0.113.7:40000", "10.40.0.5:25"),
            ("[2001:db8::7]:40000", "[fd00::5]:25"),
        ] {
            let mut bytes = tcp(client, lb);
            bytes.extend_from_slice(b"EHLO client\r\n");
            let mut reader = &bytes[..];
            let got = read_header(&mut reader).await.expect("header");
            assert_eq!(got, Proxied::Client(client.parse().expect("addr")));
            assert_eq!(reader, b"EHLO client\r\n");
        }
    }

    #[tokio::test]
    async fn tlvs_such_as_the_nlb_endpoint_id_are_skipped() {
        let addresses: Addresses = (
            "198.51.100.1:1234".parse::<SocketAddr>().expect("a"),
            "10.0.0.1:587".parse::<SocketAddr>().expect("b"),
        )
            .into();
        let bytes =
            Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
                .write_tlv(0xEA, b"\x01vpce-0123456789abcdef")
                .expect("tlv")
                .write_tlv(Type::NoOp, b"pad")
                .expect("noop")
                .build()
                .expect("build");
        let got = read_header(&mut &bytes[..]).await.expect("header");
        assert_eq!(
            got,
            Proxied::Client("198.51.100.1:1234".parse().expect("addr"))
        );
    }

    #[tokio::test]
    async fn a_health_check_is_local_and_keeps_the_peer() {
        let bytes = header(
            Command::Local,
            Protocol::Unspecified,
            Addresses::Unspecified,
        );
        assert_eq!(read_header(&mut &bytes[..]).await, Ok(Proxied::Local));
    }

    #[tokio::test]
    async fn anything_else_is_refused_without_reading_past_the_fixed_part() {
        // SMTP from a peer that should have sent a header.
        let sent: &[u8] = b"EHLO client.example\r\nMAIL FROM:<a@b>\r\n";
        let mut smtp = sent;
        assert!(matches!(
            read_header(&mut smtp).await,
            Err(ProxyError::Malformed(_))
        ));
        assert_eq!(smtp, &sent[FIXED_LEN..], "no more than the fixed part read");
        // A line shorter than the fixed part is refused at once, not after a timeout.
        let mut short = then_silence(b"EHLO x\r\n");
        let refused =
            tokio::time::timeout(std::time::Duration::from_secs(5), read_header(&mut short));
        assert!(matches!(refused.await, Ok(Err(ProxyError::Malformed(_)))));
        // Version 1 (text) is not what the load balancer sends.
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 25\r\n";
        assert!(read_header(&mut &v1[..]).await.is_err());
        // A declared length beyond the cap is refused before it is read.
        let mut huge = tcp("203.0.113.7:1", "10.0.0.1:25");
        huge[14..16].copy_from_slice(&60_000u16.to_be_bytes());
        assert_eq!(
            read_header(&mut &huge[..]).await,
            Err(ProxyError::TooLong(60_000))
        );
        // Truncated: the connection ends inside the addresses.
        let whole = tcp("203.0.113.7:1", "10.0.0.1:25");
        assert!(matches!(
            read_header(&mut &whole[..20]).await,
            Err(ProxyError::Io(_))
        ));
        // UDP and AF_UNIX name no TCP client.
        let udp = header(
            Command::Proxy,
            Protocol::Datagram,
            (
                "203.0.113.7:1".parse::<SocketAddr>().expect("a"),
                "10.0.0.1:25".parse::<SocketAddr>().expect("b"),
            )
                .into(),
        );
        assert_eq!(
            read_header(&mut &udp[..]).await,
            Err(ProxyError::Unsupported)
        );
    }

    /// A reader that has sent `bytes` and then waits forever, as an idle client does.
    fn then_silence(bytes: &'static [u8]) -> impl AsyncRead + Unpin {
        bytes.chain(Pending)
    }

    struct Pending;
    impl AsyncRead for Pending {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Pending
        }
    }

    #[test]
    fn only_the_configured_networks_send_headers() {
        let peers = ProxyPeers(vec!["10.40.0.0/24".parse().expect("net")]);
        assert!(peers.expects_header("10.40.0.9".parse().expect("ip")));
        assert!(peers.expects_header("::ffff:10.40.0.9".parse().expect("mapped")));
        assert!(!peers.expects_header("10.40.1.9".parse().expect("ip")));
        assert!(!ProxyPeers::default().expects_header("10.40.0.9".parse().expect("ip")));
    }
}
