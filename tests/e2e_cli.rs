//! End-to-end tests of the real `gossipdir` binary: several `gossipdir node` processes on
//! 127.0.0.1, driven through the thin CLI clients and the HTTP API.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gossipdir");
const TTL_SECS: u64 = 3;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn gossipdir(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gossipdir")
}

/// A running `gossipdir node`; killed (SIGKILL) on drop.
struct NodeProc {
    child: Child,
    api: String,
    peer: String,
    addr: String,
    dir: tempfile::TempDir,
}

impl NodeProc {
    fn start(bootstrap: Option<&NodeProc>, extra: &[&str]) -> NodeProc {
        Self::start_on(None, bootstrap, extra)
    }

    /// `listen_ip`: listen on this IP instead of 127.0.0.1.
    fn start_on(listen_ip: Option<&str>, bootstrap: Option<&NodeProc>, extra: &[&str]) -> NodeProc {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("key");
        let out = gossipdir(&["keygen", "--out", key.to_str().unwrap()]);
        assert!(out.status.success(), "keygen failed: {out:?}");
        let peer = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let port = free_port();
        let api = format!("127.0.0.1:{}", free_port());
        let addr = format!("/ip4/127.0.0.1/tcp/{port}");
        let listen = format!("/ip4/{}/tcp/{port}", listen_ip.unwrap_or("127.0.0.1"));
        let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
        let mut args: Vec<String> = [
            "node",
            "--listen",
            &listen,
            "--api",
            &api,
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--interval",
            "200ms",
            "--ttl",
            &format!("{TTL_SECS}s"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(b) = bootstrap {
            args.push("--bootstrap".into());
            args.push(format!("{}/p2p/{}", b.addr, b.peer));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(BIN)
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gossipdir node");
        let node = NodeProc {
            child,
            api,
            peer,
            addr,
            dir,
        };
        eventually("the API to answer", Duration::from_secs(20), || {
            node.status().ok().map(|_| ())
        });
        node
    }

    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--api", &self.api]);
        let out = gossipdir(&all);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn status(&self) -> Result<Value, String> {
        let text = self.cli(&["status", "--json"])?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    fn query(&self, capability: &str) -> Vec<Value> {
        let text = self
            .cli(&["query", "--capability", capability, "--json"])
            .expect("query");
        serde_json::from_str::<Vec<Value>>(&text).expect("query JSON")
    }

    fn nodes(&self) -> u64 {
        self.status()
            .ok()
            .and_then(|s| s["nodes"].as_u64())
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited with 0.
    fn terminate(&mut self, deadline: Duration) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM failed");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            assert!(
                start.elapsed() < deadline,
                "node did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- log of node {} ----\n{}", self.peer, self.log());
        }
    }
}

/// `gossipdir watch --json` against a node, its lines read by a thread; killed on drop.
struct Watch {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Watch {
    fn start(node: &NodeProc) -> Watch {
        let mut child = Command::new(BIN)
            .args(["watch", "--json", "--api", &node.api])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gossipdir watch");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }

    fn next_line(&mut self, deadline: Duration) -> String {
        self.lines
            .recv_timeout(deadline)
            .unwrap_or_else(|e| panic!("no line from `gossipdir watch` within {deadline:?}: {e}"))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn chain_of_five_announce_query_crash_and_sigterm() {
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 0..5 {
        let node = NodeProc::start(nodes.get(i.max(1) - 1).filter(|_| i > 0), &["--no-mdns"]);
        nodes.push(node);
    }
    for node in &nodes {
        eventually("all five node records", Duration::from_secs(20), || {
            (node.nodes() == 5).then_some(())
        });
    }

    // Node 0's change stream is open once it shows a change (node records are refreshed
    // every TTL/3).
    let mut watch = Watch::start(&nodes[0]);
    watch.next_line(Duration::from_secs(10));

    // Announce on the last, find it on the first.
    nodes[4]
        .cli(&[
            "announce",
            "--name",
            "summarizer",
            "--capability",
            "summarize",
            "--capability",
            "english",
            "--endpoint",
            "https://summarizer.test/v1",
            "--meta",
            "model=tiny",
        ])
        .expect("announce");
    let found = eventually("the specialist on node 0", Duration::from_secs(10), || {
        let r = nodes[0].query("summarize");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(found.len(), 1);
    let r = &found[0];
    assert_eq!(r["name"], "summarizer");
    assert_eq!(r["owner"], nodes[4].peer.as_str());
    assert_eq!(r["endpoint"], "https://summarizer.test/v1");
    assert_eq!(r["meta"]["model"], "tiny");
    assert!(r["seq"].as_u64().is_some() && r["expires_at"].as_u64().is_some());
    let caps: Vec<&str> = r["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(caps, ["summarize", "english"]);
    let change = loop {
        let line = watch.next_line(Duration::from_secs(10));
        let change: Value = serde_json::from_str(&line).expect("a JSON line");
        if change["kind"] == "specialist" {
            break change;
        }
    };
    assert_eq!(&change["record"], r, "the watcher saw what the query shows");
    drop(watch);
    let table = nodes[0]
        .cli(&["query", "--capability", "summarize"])
        .unwrap();
    assert!(
        table.starts_with("NAME") && table.contains("summarizer"),
        "{table}"
    );
    let peers: Vec<Value> =
        serde_json::from_str(&nodes[0].cli(&["peers", "--json"]).unwrap()).unwrap();
    assert!(peers.len() >= 4, "{peers:?}");
    assert!(peers.iter().any(|p| p["connected"] == true));

    // Kill -9 node 2 (no withdrawal): its specialist leaves every listing within the TTL plus
    // a few rounds. The specialist itself lives 10 minutes (the default --specialist-ttl):
    // its owner's node record, which expires after --ttl, is what keeps it listed.
    nodes[2]
        .cli(&["announce", "--name", "crashy", "--capability", "crash"])
        .unwrap();
    // Node 3's specialist lives 60 s: only a withdrawal can make it vanish quickly.
    nodes[3]
        .cli(&[
            "announce",
            "--name",
            "leaver",
            "--capability",
            "leave",
            "--ttl",
            "60s",
        ])
        .unwrap();
    for i in [0, 1, 4] {
        eventually(
            "crashy and leaver everywhere",
            Duration::from_secs(10),
            || {
                (!nodes[i].query("crash").is_empty() && !nodes[i].query("leave").is_empty())
                    .then_some(())
            },
        );
    }
    let crashy = nodes[0].query("crash");
    let lifetime =
        crashy[0]["expires_at"].as_u64().unwrap() - crashy[0]["issued_at"].as_u64().unwrap();
    assert!(
        lifetime >= 600_000,
        "a specialist lives 10 min: {lifetime} ms"
    );
    let mut crashed = nodes.remove(2);
    crashed.child.kill().unwrap();
    crashed.child.wait().unwrap();
    let killed_at = Instant::now();
    for node in &nodes {
        eventually(
            "the killed node's specialist to expire",
            Duration::from_secs(TTL_SECS + 3),
            || node.query("crash").is_empty().then_some(()),
        );
        eventually(
            "the killed node's node record to expire",
            Duration::from_secs(TTL_SECS + 3),
            || (node.nodes() == 4).then_some(()),
        );
    }
    eprintln!(
        "kill -9: expired everywhere after {:?}",
        killed_at.elapsed()
    );

    // SIGTERM node 3 (now at index 2): it withdraws and exits 0; the withdrawal arrives
    // within a few rounds, long before the 60 s TTL.
    let mut leaver = nodes.remove(2);
    let term_at = Instant::now();
    assert!(
        leaver.terminate(Duration::from_secs(10)),
        "exit status not 0"
    );
    for node in &nodes {
        eventually("the withdrawal", Duration::from_secs(3), || {
            node.query("leave").is_empty().then_some(())
        });
        eventually("the node record withdrawal", Duration::from_secs(3), || {
            (node.nodes() == 3).then_some(())
        });
    }
    eprintln!(
        "SIGTERM: withdrawn everywhere {:?} after the signal",
        term_at.elapsed()
    );
    assert!(
        nodes[0].query("summarize").len() == 1,
        "the others' records stay"
    );
}

#[test]
fn two_nodes_find_each_other_by_mdns() {
    // libp2p-mdns runs on the non-loopback interfaces and does not announce loopback
    // addresses: the nodes listen on every interface, as they do by default.
    let a = NodeProc::start_on(Some("0.0.0.0"), None, &[]);
    let b = NodeProc::start_on(Some("0.0.0.0"), None, &[]);
    for node in [&a, &b] {
        eventually("mDNS discovery", Duration::from_secs(20), || {
            (node.nodes() == 2).then_some(())
        });
    }
    a.cli(&["announce", "--name", "x", "--capability", "mdns-found"])
        .unwrap();
    eventually("the specialist over mDNS", Duration::from_secs(10), || {
        (!b.query("mdns-found").is_empty()).then_some(())
    });
}

fn http(api: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(api).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

fn post(api: &str, content_type: Option<&str>, body: &str) -> (u16, String) {
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    http(
        api,
        &format!(
            "POST /v1/specialists HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn get(api: &str, path: &str) -> (u16, String) {
    http(
        api,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn api_refuses_bad_input_and_serves_metrics() {
    let node = NodeProc::start(None, &["--no-mdns"]);
    let api = node.api.as_str();
    let json = Some("application/json");
    let (code, body) = post(api, None, r#"{"name":"a","capabilities":["x"]}"#);
    assert_eq!(code, 415, "{body}");
    let field = |body: &str| -> String {
        serde_json::from_str::<Value>(body).unwrap()["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    for (payload, expected) in [
        (r#"{"capabilities":["x"]}"#, "name"),
        (r#"{"name":"a"}"#, "capabilities"),
        (r#"{"name":"a","capabilities":[""]}"#, "capabilities"),
        (r#"{"name":"a","capabilities":"x"}"#, "capabilities"),
        (
            r#"{"name":"a","capabilities":["x"],"ttl_secs":0}"#,
            "ttl_secs",
        ),
        (
            r#"{"name":"a","capabilities":["x"],"meta":{"k":1}}"#,
            "meta",
        ),
        (
            r#"{"name":"a","capabilities":["x"],"endpoint":""}"#,
            "endpoint",
        ),
        (r#"not json"#, "body"),
    ] {
        let (code, body) = post(api, json, payload);
        assert_eq!(code, 400, "{payload}: {body}");
        assert_eq!(field(&body), expected, "{payload}: {body}");
    }
    let huge = format!(
        r#"{{"name":"a","capabilities":["x"],"endpoint":"{}"}}"#,
        "e".repeat(64 * 1024)
    );
    let (code, _) = post(api, json, &huge);
    assert_eq!(code, 413);
    // Nothing was stored from the refused requests.
    let (code, body) = get(api, "/v1/records");
    assert_eq!((code, body.trim()), (200, "[]"));
    let (code, body) = get(api, "/v1/records?colour=red");
    assert_eq!(code, 400, "{body}");
    let (code, body) = get(api, "/v1/watch?capability=");
    assert_eq!((code, field(&body).as_str()), (400, "capability"), "{body}");
    let (code, _) = http(
        api,
        "DELETE /v1/specialists/nobody HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 404);
    let (code, body) = post(
        api,
        json,
        r#"{"name":"ok","capabilities":["x"],"ttl_secs":30}"#,
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = get(api, "/v1/records?capability=x");
    assert_eq!(code, 200);
    assert!(body.contains("\"ok\""), "{body}");
    let (code, metrics) = get(api, "/metrics");
    assert_eq!(code, 200);
    for name in [
        "gossipdir_records",
        "gossipdir_rounds_total",
        "gossipdir_rejected_records_total{reason=\"bad_signature\"}",
        "gossipdir_exchange_bytes_total",
        "gossipdir_holepunch_attempts_total",
        "libp2p_swarm",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}");
    }
}

#[test]
fn key_file_is_private_and_a_damaged_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let out = gossipdir(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(out.status.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // keygen never overwrites.
    assert!(
        !gossipdir(&["keygen", "--out", key.to_str().unwrap()])
            .status
            .success()
    );
    std::fs::write(&key, b"garbage").unwrap();
    let out = Command::new(BIN)
        .args(["node", "--key", key.to_str().unwrap(), "--no-mdns"])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--api", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged"));
    assert_eq!(std::fs::read(&key).unwrap(), b"garbage");
    let _ = Path::new(BIN);
}

#[test]
fn api_beyond_loopback_needs_a_token_and_the_token_is_enforced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().unwrap();
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    // Binding the API on every interface without a token is refused at start.
    let open_api = format!("0.0.0.0:{}", free_port());
    let out = gossipdir(&[
        "node",
        "--no-mdns",
        "--listen",
        &listen,
        "--data-dir",
        data,
        "--api",
        &open_api,
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token"),
        "{out:?}"
    );

    // With a token, requests without it get 401 and requests with it are served.
    let token = "correct-horse-battery-staple";
    let api = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args([
            "node",
            "--no-mdns",
            "--listen",
            &listen,
            "--data-dir",
            data,
            "--api",
            &api,
        ])
        .args(["--api-token", token])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gossipdir node");
    let (code, body) = eventually("the API to answer", Duration::from_secs(20), || {
        TcpStream::connect(&api)
            .ok()
            .map(|_| get(&api, "/v1/status"))
    });
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("authorization"), "{body}");
    let (code, _) = http(
        &api,
        &format!(
            "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
        ),
    );
    assert_eq!(code, 200);
    let without = gossipdir(&["status", "--api", &api]);
    assert!(!without.status.success());
    let with = gossipdir(&["status", "--json", "--api", &api, "--api-token", token]);
    assert!(with.status.success(), "{with:?}");
    let _ = child.kill();
    let _ = child.wait();
}

/// `gossipdir demo` runs real nodes in one process over QUIC as well as TCP: every trial
/// converges, and the report says which transport carried it and what an idle window cost.
#[test]
fn demo_converges_over_quic_and_reports_its_idle_window() {
    let out = gossipdir(&[
        "demo",
        "--nodes",
        "6",
        "--trials",
        "3",
        "--transport",
        "quic",
        "--idle",
        "1s",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["converged"], 3, "{report}");
    let engine = &report["engine"];
    assert_eq!(engine["transport"], "libp2p quic-v1 on 127.0.0.1");
    assert_eq!(engine["process"]["idle"]["secs"], 1.0);
    assert!(engine["process"]["idle"]["gossip_bytes_received_per_node_per_sec"].is_number());
    let refused = gossipdir(&["demo", "--nodes", "3", "--transport", "udp"]);
    assert!(!refused.status.success());
}
