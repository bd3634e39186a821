//! Connections on the thread of the CPU that received them: a `ListenerGroup` on loopback with
//! two runtime threads pinned to two CPUs, and clients pinned to each CPU. On loopback a
//! connection's packets are received on the CPU that sent them, so every connection from the
//! client on CPU c must be accepted by the thread on CPU c, whose `SO_INCOMING_CPU` says c.
//! Without the reuseport program the kernel's hash would send about half of them to the other
//! thread.
//!
//! By queue, in the kernel guest: connections from a network namespace through QEMU's hub
//! arrive on the one receive queue of a real virtio_net device, and a group by queue must give
//! every one to the thread that claims that queue, with that queue's NAPI id.

mod common;

use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use test_kit::{skip, Outcome};
use zcrx::net::ListenerGroup;
use zcrx::time::timeout;

/// Connections per client CPU.
const PER_CPU: usize = 24;

fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).unwrap();
}

fn each_connection_on_the_thread_of_its_cpu() -> Outcome {
    let builder = common::builder().threads(2).chunks(64);
    let Some(cpus) = builder.pinned_cpus() else {
        return Err(skip("this thread's CPU set cannot be read"));
    };
    if cpus[0] == cpus[1] {
        return Err(skip("needs two CPUs to pin two threads on"));
    }
    let group = Arc::new(ListenerGroup::bind_by_cpu("127.0.0.1:0", &cpus).unwrap());
    let addr = group.local_addr();
    assert_eq!(group.cpus(), cpus);

    // The clients connect before the runtimes accept: the listener is chosen at the SYN, and
    // the connection waits in that listener's queue.
    let ready = Arc::new(Barrier::new(cpus.len() + 1));
    let clients: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            let ready = ready.clone();
            std::thread::spawn(move || {
                pin(cpu);
                let streams: Vec<std::net::TcpStream> = (0..PER_CPU)
                    .map(|_| {
                        let mut s = std::net::TcpStream::connect(addr).unwrap();
                        s.write_all(&[cpu as u8]).unwrap();
                        s
                    })
                    .collect();
                ready.wait();
                // Held open until the runtimes are done with them.
                streams
            })
        })
        .collect();
    ready.wait();

    let accepted = builder
        .run(move |i| {
            let group = group.clone();
            async move {
                let listener = group.listener(i).unwrap();
                let mut got = Vec::new();
                // Until no connection has come for a while: the others went elsewhere.
                while let Ok(Ok((stream, _))) =
                    timeout(Duration::from_millis(500), listener.accept()).await
                {
                    let incoming = stream.incoming_cpu().unwrap();
                    let tag = stream.recv().await.unwrap().expect("the client's CPU")[0];
                    got.push((incoming, tag as usize));
                }
                (i, got)
            }
        })
        .unwrap();
    for c in clients {
        drop(c.join().unwrap());
    }

    let mut total = 0;
    for (i, got) in accepted {
        let cpu = cpus[i];
        println!(
            "thread {i} on CPU {cpu}: {} connections: {got:?}",
            got.len()
        );
        for &(incoming, client_cpu) in &got {
            assert_eq!(
                client_cpu, cpu,
                "thread {i} on CPU {cpu} accepted a connection from CPU {client_cpu}"
            );
            assert_eq!(
                incoming as usize, cpu,
                "SO_INCOMING_CPU of a connection on thread {i}"
            );
        }
        assert_eq!(
            got.len(),
            PER_CPU,
            "thread {i} got every connection of its CPU"
        );
        total += got.len();
    }
    assert_eq!(total, PER_CPU * cpus.len());
    Ok(())
}

/// Connections per run of the by-queue test.
const BY_QUEUE: usize = 24;

/// The guest's hub devices have one receive queue each, and virtio_net records it on every
/// packet: every connection from the namespace arrives on queue 0. The group claims queue 1
/// (which the device does not have) for thread 0 and queue 0 for thread 1, so thread 1 must
/// accept them all, where the kernel's hash would give about half to thread 0 (and a program
/// that ignored the queue, all to listener 0), and each must report the NAPI id netdev gives
/// queue 0.
fn each_connection_on_the_thread_of_its_queue() -> Outcome {
    let pair = test_kit::netns::HubPair::new("zcqueue").map_err(skip)?;
    let napi = zcrx_ifq::nic::read(&pair.here)
        .unwrap()
        .rx_queue(0)
        .and_then(|q| q.napi_id)
        .expect("netdev lists queue 0 with its NAPI id");
    let group = Arc::new(
        ListenerGroup::bind_by_queue((test_kit::netns::HubPair::HERE_ADDR, 0), &[1, 0]).unwrap(),
    );
    assert_eq!(group.queues(), [1, 0]);
    assert!(group.cpus().is_empty());
    let port = group.local_addr().port();
    let ns = pair.ns;
    let clients = std::thread::spawn(move || {
        test_kit::netns::in_netns(ns, move || {
            (0..BY_QUEUE)
                .map(|i| {
                    let addr = (test_kit::netns::HubPair::HERE_ADDR, port);
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(&[i as u8]).unwrap();
                    s
                })
                .collect::<Vec<_>>()
        })
    });
    let streams = clients.join().unwrap();
    let accepted = common::builder()
        .threads(2)
        .chunks(64)
        .run(move |i| {
            let group = group.clone();
            async move {
                let listener = group.listener(i).unwrap();
                let mut got = Vec::new();
                while let Ok(Ok((stream, _))) =
                    timeout(Duration::from_millis(500), listener.accept()).await
                {
                    let id = stream.incoming_napi_id().unwrap();
                    let tag = stream.recv().await.unwrap().expect("the client's tag")[0];
                    got.push((id, tag));
                }
                (i, got)
            }
        })
        .unwrap();
    drop(streams);
    drop(pair);
    for (i, got) in &accepted {
        println!(
            "thread {i}: {} connections, NAPI ids {:?}",
            got.len(),
            got.iter().map(|g| g.0).collect::<Vec<_>>()
        );
    }
    let (_, on_queue_0) = accepted.iter().find(|(i, _)| *i == 1).unwrap();
    let (_, on_queue_1) = accepted.iter().find(|(i, _)| *i == 0).unwrap();
    assert!(
        on_queue_1.is_empty(),
        "thread 0 (queue 1) accepted {on_queue_1:?}"
    );
    assert_eq!(
        on_queue_0.len(),
        BY_QUEUE,
        "thread 1 (queue 0) got every connection"
    );
    for &(id, tag) in on_queue_0 {
        assert_eq!(
            id, napi,
            "SO_INCOMING_NAPI_ID of connection {tag}: queue 0's NAPI id"
        );
    }
    Ok(())
}

/// A group takes each listener once, in a runtime, by an index it has.
fn listeners_are_taken_once_inside_a_runtime() {
    let group = ListenerGroup::bind_by_cpu("127.0.0.1:0", &[0]).unwrap();
    assert!(group.local_addr().port() != 0);
    assert!(group.listener(0).is_err(), "outside a runtime");
    assert!(ListenerGroup::bind_by_cpu("127.0.0.1:0", &[]).is_err());
    assert!(ListenerGroup::bind_by_queue("127.0.0.1:0", &[]).is_err());
    assert!(ListenerGroup::bind_by_queue("127.0.0.1:0", &[u32::MAX]).is_err());
    // The queues to bind by, as the runtime's threads register them: thread i, queue 3 + i.
    let zcrx = common::builder().threads(2).zcrx_queue("eth0", 3);
    assert_eq!(zcrx.zcrx_queues(), Some(vec![3, 4]));
    assert_eq!(common::builder().zcrx_nodev().zcrx_queues(), None);
    let rt = common::builder().chunks(16).build().unwrap();
    rt.block_on(async {
        assert!(group.listener(1).is_err(), "past the group");
        let l = group.listener(0).unwrap();
        assert_eq!(l.local_addr().unwrap(), group.local_addr());
        let again = group.listener(0).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    });
}

test_kit::main!(
    each_connection_on_the_thread_of_its_cpu,
    each_connection_on_the_thread_of_its_queue,
    listeners_are_taken_once_inside_a_runtime,
);
