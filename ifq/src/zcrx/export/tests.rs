//! The export message and the fd hand-over, without a kernel.

use super::*;

fn info() -> ExportInfo {
    ExportInfo {
        chunk_size: 4096,
        chunks: 64,
        buf_shift: 12,
        rq_entries: 64,
        region_len: 8192,
        head: 0,
        tail: 64,
        rqes: 128,
        no_device: true,
        area_token: 0,
    }
}

#[test]
fn info_round_trips() {
    let i = info();
    assert_eq!(ExportInfo::decode(&i.encode()).unwrap(), i);
    let j = ExportInfo {
        no_device: false,
        area_token: 3 << 48,
        ..i
    };
    assert_eq!(ExportInfo::decode(&j.encode()).unwrap(), j);
}

#[test]
fn bad_messages_are_refused() {
    let b = info().encode();
    assert!(ExportInfo::decode(&b[..55]).is_err());
    let mut wrong = b;
    wrong[0] = b'X';
    assert!(ExportInfo::decode(&wrong).is_err());
    let mut flags = b;
    flags[44] = 7;
    assert!(ExportInfo::decode(&flags).is_err());
}

proptest::proptest! {
    /// What another process sends is input: any bytes decode to an error or to a value
    /// that encodes back to the same bytes, and nothing panics.
    #[test]
    fn any_message_decodes_or_is_refused(bytes in proptest::collection::vec(
        proptest::prelude::any::<u8>(), 0..80)) {
        if let Ok(info) = ExportInfo::decode(&bytes) {
            proptest::prop_assert_eq!(&info.encode()[..], &bytes[..]);
        }
    }

    /// The same behind the right magic, where decoding gets past the first check.
    #[test]
    fn any_body_behind_the_magic(body in proptest::collection::vec(
        proptest::prelude::any::<u8>(), 40..56)) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&body);
        if let Ok(info) = ExportInfo::decode(&bytes) {
            proptest::prop_assert_eq!(&info.encode()[..], &bytes[..]);
        }
    }

    /// Every geometry round-trips.
    #[test]
    fn every_info_round_trips(w in proptest::array::uniform9(proptest::prelude::any::<u32>()),
                              region_len in proptest::prelude::any::<u64>(),
                              area_token in proptest::prelude::any::<u64>()) {
        let i = ExportInfo {
            chunk_size: w[0], chunks: w[1], buf_shift: w[2], rq_entries: w[3],
            region_len, head: w[4], tail: w[5], rqes: w[6], no_device: w[7] % 2 == 1,
            area_token,
        };
        proptest::prop_assert_eq!(ExportInfo::decode(&i.encode()).unwrap(), i);
    }
}

#[test]
fn send_and_recv_carry_three_fds() {
    let (a, b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let memfd = |n| rustix::fs::memfd_create(n, rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let e = ZcrxExport {
        zcrx: memfd("z"),
        area: memfd("a"),
        region: memfd("r"),
        info: info(),
    };
    e.send(&a).unwrap();
    let got = ZcrxExport::recv(&b).unwrap();
    assert_eq!(got.info, e.info);
    // Three new fds, not the sender's numbers reused.
    assert_ne!(
        std::os::fd::AsRawFd::as_raw_fd(&got.zcrx),
        std::os::fd::AsRawFd::as_raw_fd(&e.zcrx)
    );
    // Two fds only: refused, nothing leaks (the fds drop with the error).
    let fds = [e.zcrx.as_fd(), e.area.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let bytes = info().encode();
    sendmsg(
        &a,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    match ZcrxExport::recv(&b) {
        Err(Error::BadExport { why }) => assert!(why.contains("2 fds"), "{why}"),
        other => panic!("expected BadExport, got {other:?}"),
    }
}
