//! The tests: curl byte-exact both ways, wrk under load, on each runtime.

use super::*;

/// curl: the small answer, 64 MiB of the pattern compared byte for byte, several MiB posted
/// to `/echo` from a file (with a length, and chunked) and compared back, `/count`, and the
/// error statuses. Then SIGTERM: the server stops at once and exits 0.
pub(crate) fn curl_bodies(on: On) -> Outcome {
    tools()?;
    let server = Server::start(on, 2, None);
    let scratch = Scratch::new(on.flag());

    let hello = curl(&[&server.url("/")]);
    assert!(
        String::from_utf8_lossy(&hello).starts_with("Hello"),
        "{hello:?}"
    );

    const BIG: usize = 64 << 20;
    let file = scratch.path("bytes");
    let headers = curl(&[
        "-D",
        "-",
        "-o",
        file.to_str().unwrap(),
        &server.url(&format!("/bytes/{BIG}")),
    ]);
    let headers = String::from_utf8_lossy(&headers).to_ascii_lowercase();
    assert!(
        headers.contains(&format!("content-length: {BIG}")),
        "{headers}"
    );
    assert_same(
        &std::fs::read(&file).unwrap(),
        &Pattern::bytes(0, BIG),
        "GET /bytes/67108864",
    );
    // Across the shared first MiB's end, and empty.
    let n = (1 << 20) + 12345;
    assert_same(
        &curl(&[&server.url(&format!("/bytes/{n}"))]),
        &Pattern::bytes(0, n),
        "GET /bytes/1060921",
    );
    assert!(curl(&[&server.url("/bytes/0")]).is_empty());

    let upload = Pattern::bytes(7, (6 << 20) + 3);
    let input = scratch.path("upload");
    std::fs::write(&input, &upload).unwrap();
    let data = format!("@{}", input.display());
    for chunked in [false, true] {
        let out = scratch.path("echoed");
        let mut args = vec![
            "--data-binary",
            &data,
            "-H",
            "Content-Type: application/octet-stream",
            "-o",
            out.to_str().unwrap(),
        ];
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        let url = server.url("/echo");
        args.push(&url);
        curl(&args);
        assert_same(
            &std::fs::read(&out).unwrap(),
            &upload,
            &format!("POST /echo (chunked: {chunked})"),
        );
    }
    let count = curl(&["--data-binary", &data, &server.url("/count")]);
    assert_eq!(
        String::from_utf8_lossy(&count).trim(),
        upload.len().to_string()
    );

    let status = |args: &[&str]| {
        let out = run_bounded(
            Command::new("curl")
                .args(["-sS", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}"])
                .args(args),
            Duration::from_secs(30),
        )
        .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(status(&[&server.url("/nothing")]), "404");
    assert_eq!(status(&[&server.url("/bytes/lots")]), "400");
    assert_eq!(status(&["-X", "DELETE", &server.url("/echo")]), "405");
    assert_eq!(status(&[&server.url("/echo")]), "405");

    let (status, said) = server.stop(Duration::from_secs(5));
    assert!(status.success(), "exit {status}: {said:?}");
    assert!(
        said.iter()
            .any(|l| l.contains("stopped;") && l.contains("0 ended with an error")),
        "{said:?}"
    );
    Ok(())
}

pub(crate) fn curl_bodies_on_zcrx() -> Outcome {
    curl_bodies(On::Zcrx)
}

pub(crate) fn curl_bodies_on_tokio() -> Outcome {
    curl_bodies(On::Tokio)
}

/// wrk for 2 s with a few connections, on `/` and on 64 KiB bodies: requests completed, no
/// socket errors, every answer 2xx. Then a graceful stop with wrk's connections still open.
pub(crate) fn wrk_load(on: On) -> Outcome {
    tools()?;
    let server = Server::start(on, 2, None);
    for path in ["/", "/bytes/65536"] {
        let w = wrk(
            &["-t1", "-c8", "-d2s"],
            &server.url(path),
            Duration::from_secs(30),
        );
        eprintln!(
            "{on:?} {path}: {} requests, {:.0}/s",
            w.requests, w.per_second
        );
        assert!(w.requests > 100, "too few requests: {}", w.text);
        assert_eq!(w.socket_errors, [0; 4], "socket errors: {}", w.text);
        assert_eq!(w.non_2xx, 0, "non-2xx answers: {}", w.text);
    }
    // Two connections open when the stop comes: one idle after a request (keep-alive), one
    // in the middle of a 1 GiB download.
    let mut idle = common::connect(server.addr);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = idle.read(&mut answer).unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &answer[..n]
    );
    let mut busy = common::connect(server.addr);
    busy.write_all(b"GET /bytes/1073741824 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = 0;
    while got < 1 << 20 {
        got += busy.read(&mut answer).unwrap();
    }
    let (status, said) = server.stop(Duration::from_secs(10));
    assert!(status.success(), "exit {status}: {said:?}");
    // The idle one was closed in order; the download was cut after the grace period.
    assert_eq!(
        idle.read(&mut answer).unwrap(),
        0,
        "the idle connection ends"
    );
    let mut rest = 0u64;
    let end = loop {
        match busy.read(&mut answer) {
            Ok(0) => break Ok(()),
            Ok(n) => rest += n as u64,
            Err(e) => break Err(e),
        }
    };
    assert!(
        got as u64 + rest < 1 << 30,
        "the download was cut ({end:?})"
    );
    Ok(())
}

pub(crate) fn wrk_load_on_zcrx() -> Outcome {
    wrk_load(On::Zcrx)
}

pub(crate) fn wrk_load_on_tokio() -> Outcome {
    wrk_load(On::Tokio)
}
