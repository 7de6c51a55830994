//! The nf_tables ruleset generation of a network namespace: a number the kernel bumps on
//! every nf_tables commit there, whatever the table, family or tool (`iptables-nft`,
//! `ip6tables-nft`, `nft`, a firewall daemon). While it stays the same nothing in nf_tables
//! changed, so the drift check knows our chains are as it last read them without running
//! `iptables-save`. It is one netlink request (`NFT_MSG_GETGEN`) and one answer.
//!
//! The encoding and decoding are pure functions on byte buffers; [`Generation`] owns the
//! socket, opened in the namespace the iptables tools act on.

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use rustix::{
    net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink, recv, sendto, socket_with},
    thread::{LinkNameSpaceType, move_into_link_name_space},
};

/// `NFNL_SUBSYS_NFTABLES`: the high byte of every nf_tables message type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
/// The generation id attribute of `NFT_MSG_NEWGEN`, a big-endian u32.
const NFTA_GEN_ID: u16 = 1;
const NLM_F_REQUEST: u16 = 0x1;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
/// `nlmsghdr`: length, type, flags, sequence number, port id.
const NLMSG_HDRLEN: usize = 16;
/// `nfgenmsg`: family (`AF_UNSPEC`), version (`NFNETLINK_V0`), resource id (big-endian).
const NFGENMSG_LEN: usize = 4;
/// `nlattr`: length, type.
const NLA_HDRLEN: usize = 4;
/// The two high bits of an attribute type are flags (nested, network byte order).
const NLA_TYPE_MASK: u16 = 0x3fff;
/// The answer is about 50 bytes (the id, the pid and name of the last committer).
const RECV_BUFFER: usize = 1024;
/// Where `ip netns add` puts the namespaces it names.
const NETNS_DIR: &str = "/run/netns";

/// Why the generation could not be read. The caller falls back to reading the table.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("cannot open the network namespace {}", path.display())]
    Netns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot start a thread to enter the network namespace")]
    Thread(#[source] io::Error),

    #[error("cannot open a netfilter netlink socket")]
    Socket(#[source] io::Error),

    #[error("cannot send the netlink request")]
    Send(#[source] io::Error),

    #[error("cannot receive the netlink answer")]
    Receive(#[source] io::Error),

    /// The kernel answered the request with an error (e.g. EPERM without CAP_NET_ADMIN).
    #[error("the kernel refused NFT_MSG_GETGEN")]
    Refused(#[source] io::Error),

    #[error("the kernel did not answer NFT_MSG_GETGEN at once")]
    NoAnswer,

    #[error("malformed netlink answer: {0}")]
    Malformed(&'static str),
}

/// The `NFT_MSG_GETGEN` request with sequence number `seq`.
pub fn encode_request(seq: u32) -> [u8; NLMSG_HDRLEN + NFGENMSG_LEN] {
    let mut msg = [0u8; NLMSG_HDRLEN + NFGENMSG_LEN];
    // The netlink header is in host byte order; the length fits a u32 by construction.
    msg[0..4].copy_from_slice(&((NLMSG_HDRLEN + NFGENMSG_LEN) as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    msg[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    // Port id 0 lets the kernel fill in ours; nfgenmsg is AF_UNSPEC, NFNETLINK_V0 and
    // resource id 0, all zero bytes.
    msg
}

/// The generation id in the answer to request `seq` among the messages of one datagram;
/// `Ok(None)` when the datagram holds no answer to it (a leftover from an earlier request).
pub fn decode_answer(datagram: &[u8], seq: u32) -> Result<Option<u32>, GenerationError> {
    let mut rest = datagram;
    while !rest.is_empty() {
        let header = rest.get(..NLMSG_HDRLEN).ok_or(GenerationError::Malformed("truncated header"))?;
        let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = u16::from_ne_bytes([header[4], header[5]]);
        let msg_seq = u32::from_ne_bytes([header[8], header[9], header[10], header[11]]);
        let message =
            rest.get(..len).filter(|_| len >= NLMSG_HDRLEN).ok_or(GenerationError::Malformed("bad length"))?;
        // Messages are aligned to 4 bytes; the last one may lack its padding.
        rest = rest.get(align(len)..).unwrap_or_default();
        if msg_seq != seq || kind == NLMSG_NOOP {
            continue;
        }
        let payload = &message[NLMSG_HDRLEN..];
        if kind == NLMSG_ERROR {
            let code = payload.get(..4).ok_or(GenerationError::Malformed("truncated error"))?;
            return Err(match i32::from_ne_bytes([code[0], code[1], code[2], code[3]]) {
                // An acknowledgement, which a request without NLM_F_ACK does not get.
                0 => GenerationError::Malformed("an acknowledgement instead of an answer"),
                errno => GenerationError::Refused(io::Error::from_raw_os_error(errno.saturating_neg())),
            });
        }
        if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
            return Err(GenerationError::Malformed("unexpected message type"));
        }
        let attributes = payload.get(NFGENMSG_LEN..).ok_or(GenerationError::Malformed("truncated nfgenmsg"))?;
        return generation_id(attributes).map(Some);
    }
    Ok(None)
}

/// `NFTA_GEN_ID` among the attributes of `NFT_MSG_NEWGEN`.
fn generation_id(mut attributes: &[u8]) -> Result<u32, GenerationError> {
    while attributes.len() >= NLA_HDRLEN {
        let len = u16::from_ne_bytes([attributes[0], attributes[1]]) as usize;
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]) & NLA_TYPE_MASK;
        let value = attributes
            .get(NLA_HDRLEN..len)
            .filter(|_| len >= NLA_HDRLEN)
            .ok_or(GenerationError::Malformed("bad attribute"))?;
        if kind == NFTA_GEN_ID {
            let id: [u8; 4] = value.try_into().map_err(|_| GenerationError::Malformed("NFTA_GEN_ID is not 4 bytes"))?;
            return Ok(u32::from_be_bytes(id));
        }
        attributes = attributes.get(align(len)..).unwrap_or_default();
    }
    Err(GenerationError::Malformed("no NFTA_GEN_ID"))
}

fn align(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// Reads the generation of one network namespace, keeping its socket open between reads.
#[derive(Debug)]
pub struct Generation {
    /// The namespace's name (`ip netns`), or `None` for the agent's own.
    netns: Option<String>,
    socket: Option<OwnedFd>,
    seq: u32,
}

impl Generation {
    /// Opens nothing yet: the socket is opened at the first read.
    pub fn new(netns: Option<String>) -> Self {
        Self { netns, socket: None, seq: 0 }
    }

    /// The current generation. After an error the socket is closed, and the next read
    /// opens a new one.
    pub async fn read(&mut self) -> Result<u32, GenerationError> {
        let socket = match self.socket.take() {
            Some(socket) => socket,
            None => open(self.netns.as_deref()).await?,
        };
        self.seq = self.seq.wrapping_add(1);
        // Done inline, without spawn_blocking: the socket is non-blocking, and the kernel
        // handles a netfilter request inside sendto, queueing the answer before sendto
        // returns, so the receive finds it at once and nothing here waits. Were the answer
        // ever not there, the read fails (NoAnswer) and the check reads the table instead.
        let id = ask(&socket, self.seq)?;
        self.socket = Some(socket);
        Ok(id)
    }
}

/// One request and its answer on `socket`.
fn ask(socket: &OwnedFd, seq: u32) -> Result<u32, GenerationError> {
    let kernel = netlink::SocketAddrNetlink::new(0, 0);
    sendto(socket, &encode_request(seq), SendFlags::empty(), &kernel).map_err(|e| GenerationError::Send(e.into()))?;
    let mut buffer = [0u8; RECV_BUFFER];
    // Answers to earlier requests that failed half-way may still be queued; they are
    // skipped by their sequence number.
    loop {
        let (_, len) = match recv(socket, &mut buffer, RecvFlags::TRUNC) {
            Ok(received) => received,
            Err(rustix::io::Errno::AGAIN) => return Err(GenerationError::NoAnswer),
            Err(e) => return Err(GenerationError::Receive(e.into())),
        };
        let datagram = buffer.get(..len).ok_or(GenerationError::Malformed("answer larger than expected"))?;
        if let Some(id) = decode_answer(datagram, seq)? {
            return Ok(id);
        }
    }
}

/// A netfilter netlink socket in the namespace `netns`, or in the agent's own.
async fn open(netns: Option<&str>) -> Result<OwnedFd, GenerationError> {
    let Some(name) = netns else { return socket() };
    let path = Path::new(NETNS_DIR).join(name);
    let (send, receive) = tokio::sync::oneshot::channel();
    // A socket stays in the namespace it was created in, so a thread of its own enters the
    // namespace, creates it, and ends (taking its namespace with it): no thread the runtime
    // reuses ever runs elsewhere than in the agent's namespace.
    std::thread::Builder::new()
        .name("teefleet-netns".to_owned())
        .spawn(move || {
            // The receiver only goes away when the read was cancelled; the socket is
            // then simply closed.
            let _ = send.send(open_in(&path));
        })
        .map_err(GenerationError::Thread)?;
    receive.await.map_err(|_| GenerationError::Thread(io::Error::other("the namespace thread ended early")))?
}

/// Moves the calling thread into the namespace at `path` and creates the socket there.
fn open_in(path: &Path) -> Result<OwnedFd, GenerationError> {
    let namespace =
        std::fs::File::open(path).map_err(|source| GenerationError::Netns { path: path.to_owned(), source })?;
    move_into_link_name_space(namespace.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| GenerationError::Netns { path: path.to_owned(), source: e.into() })?;
    socket()
}

fn socket() -> Result<OwnedFd, GenerationError> {
    socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        Some(netlink::NETFILTER),
    )
    .map_err(|e| GenerationError::Socket(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message of `kind` answering `seq` with `payload`, padded to 4 bytes.
    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut msg = Vec::new();
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&4242u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg.resize(align(len), 0);
        msg
    }

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = NLA_HDRLEN + value.len();
        let mut attr = Vec::new();
        attr.extend_from_slice(&(len as u16).to_ne_bytes());
        attr.extend_from_slice(&kind.to_ne_bytes());
        attr.extend_from_slice(value);
        attr.resize(align(len), 0);
        attr
    }

    /// What the kernel sends: nfgenmsg, then the id, the committer's pid and name.
    fn newgen(seq: u32, id: u32) -> Vec<u8> {
        let mut payload = vec![0, 0, 0, 0];
        payload.extend(attribute(NFTA_GEN_ID, &id.to_be_bytes()));
        payload.extend(attribute(2, &1234u32.to_be_bytes()));
        payload.extend(attribute(3, b"nft\0"));
        message((10 << 8) | 15, seq, &payload)
    }

    #[test]
    fn the_request_is_getgen_for_any_family() {
        let msg = encode_request(7);
        let mut want = Vec::new();
        want.extend_from_slice(&20u32.to_ne_bytes());
        want.extend_from_slice(&((10u16 << 8) | 16).to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(msg.as_slice(), want.as_slice());
    }

    #[test]
    fn the_answer_carries_the_id_big_endian() {
        assert_eq!(decode_answer(&newgen(7, 0x0102_0304), 7).expect("valid"), Some(0x0102_0304));
        // Flag bits in the attribute type do not hide it.
        let mut payload = vec![0, 0, 0, 0];
        payload.extend(attribute(NFTA_GEN_ID | 0x4000, &9u32.to_be_bytes()));
        assert_eq!(decode_answer(&message((10 << 8) | 15, 1, &payload), 1).expect("valid"), Some(9));
    }

    #[test]
    fn answers_to_other_requests_are_skipped() {
        assert_eq!(decode_answer(&newgen(6, 1), 7).expect("valid"), None);
        let mut datagram = newgen(6, 1);
        datagram.extend(message(NLMSG_NOOP, 7, &[]));
        datagram.extend(newgen(7, 2));
        assert_eq!(decode_answer(&datagram, 7).expect("valid"), Some(2));
        assert_eq!(decode_answer(&[], 7).expect("empty"), None);
    }

    #[test]
    fn a_kernel_error_is_reported_with_its_errno() {
        let mut payload = (-1i32).to_ne_bytes().to_vec();
        payload.extend_from_slice(&encode_request(3)[..NLMSG_HDRLEN]);
        let err = decode_answer(&message(NLMSG_ERROR, 3, &payload), 3).expect_err("EPERM");
        match err {
            GenerationError::Refused(e) => assert_eq!(e.raw_os_error(), Some(1)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let good = newgen(7, 5);
        for cut in 1..good.len() {
            // Cutting inside the header, or inside the message it announces, is malformed;
            // cutting only the trailing padding of the last attribute is not.
            let _ = decode_answer(&good[..cut], 7);
        }
        assert!(matches!(decode_answer(&good[..10], 7), Err(GenerationError::Malformed(_))));
        assert!(matches!(decode_answer(&good[..good.len() - 8], 7), Err(GenerationError::Malformed(_))));
        let mut zero_len = good.clone();
        zero_len[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(decode_answer(&zero_len, 7), Err(GenerationError::Malformed(_))));
        let without_id = message((10 << 8) | 15, 7, &[0, 0, 0, 0]);
        assert!(matches!(decode_answer(&without_id, 7), Err(GenerationError::Malformed(_))));
        let other_type = message((10 << 8) | 3, 7, &[0, 0, 0, 0]);
        assert!(matches!(decode_answer(&other_type, 7), Err(GenerationError::Malformed(_))));
        let mut short_id = vec![0, 0, 0, 0];
        short_id.extend(attribute(NFTA_GEN_ID, &[1, 2]));
        assert!(matches!(decode_answer(&message((10 << 8) | 15, 7, &short_id), 7), Err(GenerationError::Malformed(_))));
    }
}
