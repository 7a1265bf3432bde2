//! The fuzz corpus in plain `cargo test`: every input kept under tests/fuzz/corpus/TARGET
//! (the seeds, and every input a fuzzer crashed on, once fixed) runs through the target's
//! body, so a finding stays fixed. `cargo xtask fuzz` runs the same bodies under libFuzzer.
//!
//! `cargo test -p agent-user --test fuzz_corpus -- --ignored write_seeds` rewrites the seeds
//! (files named `seed-*`; other files are findings and are kept).
use std::path::{Path, PathBuf};

use agent_common::{
    ExecEvent, FILE_TEXT_OFFSET, FileEvent, FilePath, Header, NetEvent, SandboxEvent, UnixEvent, UringEvent, WALK_MAIN,
    WalkedPath, file_op, hook, kind, net_op, uring_op,
};
use serde_json::json;
use tether::fuzzing::{self, ISSUER, NOW, TARGETS};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/corpus")
}

#[test]
fn every_corpus_input_holds_in_its_target() {
    let mut ran = 0;
    for (name, body) in TARGETS {
        let dir = corpus().join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target keeps a corpus)", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no corpus", dir.display());
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| body(&data));
            assert!(r.is_ok(), "{name}: {} fails its target", f.display());
            ran += 1;
        }
    }
    eprintln!("{ran} corpus inputs held");
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        let src = root.join(format!("fuzz_targets/{name}.rs"));
        let text = std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        assert!(
            text.contains(&format!("fuzzing::run(\"{name}\"")),
            "{} runs another body",
            src.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "tests/fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
    assert!(!fuzzing::run("no-such-target", b""));
}

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: the wire structs are repr(C) plain data; any of their bytes may be read.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()).to_vec() }
}

fn zeroed<T: Copy>() -> T {
    // SAFETY: the wire structs are valid for any bit pattern, zeroes included.
    unsafe { std::mem::zeroed() }
}

const HOSTILE: &str = "evil\n{\"class_uid\":2004}\u{1b}[31m\r\"\\";

fn header(k: u32, h: u32) -> Header {
    let mut x: Header = zeroed();
    x.kind = k;
    x.hook = h;
    x.tgid = 4242;
    x.tid = 4242;
    x.ktime_ns = 6_000_000_000;
    x.start_ns = 5_000_000_000;
    let comm = b"ag\nent\x1b";
    x.comm[..comm.len()].copy_from_slice(comm);
    x
}

fn walked(s: &[u8]) -> WalkedPath {
    let mut w: WalkedPath = zeroed();
    let s = &s[..s.len().min(WALK_MAIN)];
    w.buf[WALK_MAIN - s.len()..WALK_MAIN].copy_from_slice(s);
    w.start = (WALK_MAIN - s.len()) as u16;
    w.leaf = s
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |i| (WALK_MAIN - s.len() + i) as u16);
    w
}

/// File record `f` as the kernel sends it, its paths the objects `a` and `b` (if any): the
/// fixed part, then the walked texts.
fn file_record(f: &mut FileEvent, a: &[u8], b: Option<&[u8]>) -> Vec<u8> {
    let mut text = a.to_vec();
    f.a = FilePath {
        walked_len: a.len() as u16,
        source: agent_common::path_source::OBJECT,
        ..FilePath::default()
    };
    f.b = FilePath::default();
    if let Some(b) = b {
        text.extend_from_slice(b);
        f.b = FilePath {
            walked_len: b.len() as u16,
            source: agent_common::path_source::OBJECT,
            ..FilePath::default()
        };
    }
    let mut out = bytes_of(f)[..FILE_TEXT_OFFSET].to_vec();
    out.extend_from_slice(&text);
    out
}

/// One record of each kind, with hostile strings where the agent chooses them.
fn records() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut e: ExecEvent = zeroed();
    e.header = header(kind::EXEC, hook::SCHED_EXEC);
    let argv = format!("sh\0-c\0{HOSTILE}\0");
    e.argv[..argv.len()].copy_from_slice(argv.as_bytes());
    e.argv_len = argv.len() as u32;
    e.exe = walked(format!("/tmp/{HOSTILE}").as_bytes());
    e.filename[..7].copy_from_slice(b"/bin/sh");
    e.filename_len = 7;
    out.push(("exec", bytes_of(&e)));
    e.header.hook = hook::EXEC_SYSCALL;
    e.failed_errno = 13;
    out.push(("exec-refused", bytes_of(&e)));

    let mut n: NetEvent = zeroed();
    n.header = header(kind::NET, hook::CGROUP_CONNECT);
    n.op = net_op::CONNECT;
    n.family = libc::AF_INET6 as u8;
    n.protocol = libc::IPPROTO_TCP as u8;
    n.port = 443;
    n.addr = "::ffff:169.254.169.254".parse::<std::net::Ipv6Addr>().unwrap().octets();
    out.push(("net-connect", bytes_of(&n)));
    n.op = net_op::BIND;
    n.header.hook = hook::CGROUP_BIND;
    n.family = libc::AF_INET as u8;
    n.addr = [0; 16];
    n.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    out.push(("net-bind", bytes_of(&n)));
    n.op = net_op::SOCKET;
    n.header.hook = hook::CGROUP_SOCK;
    n.sock_type = libc::SOCK_RAW as u8;
    n.sock_kind = agent_common::sock_kind::RAW;
    out.push(("net-socket", bytes_of(&n)));

    let mut f: FileEvent = zeroed();
    f.header = header(kind::FILE, hook::FILE_SYSCALL);
    f.op = file_op::OPEN_WRITE;
    f.syscall_nr = 257;
    let a = format!("/etc/{HOSTILE}");
    out.push(("file-open", file_record(&mut f, a.as_bytes(), None)));
    f.op = file_op::RENAME;
    f.header.hook = hook::LSM_PATH;
    out.push(("file-rename", file_record(&mut f, a.as_bytes(), Some(b"/etc/passwd"))));

    let mut u: UnixEvent = zeroed();
    u.header = header(kind::UNIX, hook::LSM_UNIX);
    let name = format!("\0{HOSTILE}");
    u.name[..name.len()].copy_from_slice(name.as_bytes());
    u.name_len = name.len() as u32;
    u.naming = 2;
    u.sock_type = libc::SOCK_STREAM as u8;
    u.op = 1;
    u.peer = walked(b"/run/docker.sock");
    out.push(("unix", bytes_of(&u)));

    let mut r: UringEvent = zeroed();
    r.header = header(kind::URING, hook::URING_SYSCALL);
    r.op = uring_op::SETUP;
    out.push(("uring", bytes_of(&r)));

    let mut s: SandboxEvent = zeroed();
    s.header = header(kind::SANDBOX, hook::SECCOMP);
    s.syscall_nr = 321;
    s.ret = -1;
    out.push(("sandbox", bytes_of(&s)));
    out.push(("short", bytes_of(&header(kind::FORK, hook::SCHED_FORK))));
    out
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"iss": ISSUER, "sub": "user:alice", "aud": ["tether", "other"], "jti": "task-1",
                       "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 600,
                       "act": {"sub": "agent:a", "act": {"sub": "agent:root"}},
                       "scope": {"exec": ["/usr/bin/git", "/opt/**"], "write": ["/srv/task/", "/tmp/t-*"],
                                 "connect": ["tcp:127.0.0.1:8080", "tcp:[::1]:9000-9100", "udp:0.0.0.0/0:53",
                                             "tcp:api.example.com:443", "unix:@agent*", "unix:/run/x.sock"],
                                 "listen": ["tcp:0.0.0.0/0:0"], "sockets": ["icmp"], "io_uring": true}});
    if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    c
}

/// Seed inputs of every target, by name.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let mut push = |t: &'static str, n: &str, d: Vec<u8>| out.push((t, n.to_string(), d));
    // token: 0 = as presented, 1 = claims signed, 2 = header 0xff claims, signed.
    let good = claims(json!({}));
    push(
        "token",
        "signed-claims",
        [vec![1], good.to_string().into_bytes()].concat(),
    );
    let deep = (0..200).fold(
        json!({"sub": "agent:0"}),
        |a, i| json!({"sub": format!("agent:{i}"), "act": a}),
    );
    push(
        "token",
        "deep-act",
        [vec![1], claims(json!({"act": deep})).to_string().into_bytes()].concat(),
    );
    let wide: Vec<String> = (0..300).map(|i| format!("/w/{i}/")).collect();
    push(
        "token",
        "huge-scope",
        [
            vec![1],
            claims(json!({"scope": {"write": wide}})).to_string().into_bytes(),
        ]
        .concat(),
    );
    push(
        "token",
        "expired",
        [vec![1], claims(json!({"exp": NOW - 1})).to_string().into_bytes()].concat(),
    );
    let presented = fuzzing::sign(fuzzing::test_header().as_bytes(), good.to_string().as_bytes());
    push("token", "presented", [vec![0], presented.into_bytes()].concat());
    for (n, h) in [
        ("alg-none", json!({"alg": "none", "kid": "k1"})),
        ("alg-hs256", json!({"alg": "HS256", "kid": "k1"})),
        ("no-kid", json!({"alg": "EdDSA"})),
        (
            "crit",
            json!({"alg": "EdDSA", "kid": "k1", "crit": ["exp"], "jku": "https://evil"}),
        ),
    ] {
        push(
            "token",
            n,
            [
                vec![2],
                h.to_string().into_bytes(),
                vec![0xff],
                good.to_string().into_bytes(),
            ]
            .concat(),
        );
    }
    // jwks
    push("jwks", "issuer", fuzzing::issuer_jwks().into_bytes());
    push(
        "jwks",
        "mixed",
        json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "k1", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "k2", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "k3", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]})
        .to_string()
        .into_bytes(),
    );
    push(
        "jwks",
        "no-kid",
        br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"}]}"#.to_vec(),
    );
    // scope: 0 = JSON, 1 = lines.
    push(
        "scope",
        "json",
        [vec![0], good["scope"].to_string().into_bytes()].concat(),
    );
    push(
        "scope",
        "lines",
        [
            vec![1],
            b"e /usr/bin/python3*\ne /opt/**/bin/x\nw /home/*/.ssh/**\nw /dev/char/1:*\nw /srv/{a,b}/[xy]?\nc tcp:10.0.0.0/8:443\nc tcp:[::ffff:0:0]/96:1-2\nc unix:@x*\nl udp:::/0:*\ns raw\nu\n".to_vec(),
        ]
        .concat(),
    );
    // rules
    push("rules", "default", tether::policy::DEFAULT_POLICY.as_bytes().to_vec());
    push(
        "rules",
        "pods",
        br#"version: 1
mode: enforce
agents:
  - id: a
    exe: ["/usr/bin/python3*"]
    uid: [0]
guardrails:
  - id: meta
    action: kill
    connect: ["tcp:169.254.169.254:*"]
    pods: {namespace: ["agents"], pod_labels: {team: x}}
  - id: ssh
    action: deny
    mode: observe
    write: ["/home/*/.ssh/**", "/root/.ssh/"]
actions:
  unbound: {action: alert}
  scope: {action: deny, severity: high}
"#
        .to_vec(),
    );
    push(
        "rules",
        "anchors",
        b"version: 1\nagents: &a [{id: x, exe: [\"/x\"]}]\nguardrails: *a\n".to_vec(),
    );
    // record and ocsf: the same records.
    for (n, r) in records() {
        push("record", n, r.clone());
        push("ocsf", n, r);
    }
    // api: bit 0 admin, bit 1 tracked caller.
    let bind = json!({"token": "x.y.z"}).to_string();
    for (m, n, req) in [
        (0u8, "register", "POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_string()),
        (
            0,
            "bind",
            format!(
                "POST /v1/bind HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{bind}",
                bind.len()
            ),
        ),
        (0, "mode-on-agent", "POST /v1/mode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n{\"mode\":\"observe\"}".into()),
        (1, "mode", "POST /v1/mode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n{\"mode\":\"observe\"}".into()),
        (3, "mode-tracked", "POST /v1/mode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n{\"mode\":\"observe\"}".into()),
        (1, "revoke", "POST /v1/tasks/t%2F..%2F1/revoke HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/tasks HTTP/1.1\r\nHost: x\r\n\r\n".into()),
        (1, "sandbox-chunked", "POST /v1/sandbox HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n".into()),
        (0, "status-pipelined", "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1/reload HTTP/1.1\r\nHost: x\r\n\r\n".into()),
    ] {
        push("api", n, [vec![m], req.into_bytes()].concat());
    }
    // kube: 0 = list page, 1 = watch stream (byte 1: chunking).
    let pod = |uid: &str, rv: &str| {
        json!({"metadata": {"name": "p", "namespace": "agents", "uid": uid, "resourceVersion": rv,
                            "labels": {"team": "x", "evil\n": "\u{1b}"}}})
    };
    push(
        "kube",
        "list",
        [
            vec![0],
            json!({"kind": "PodList", "metadata": {"resourceVersion": "10", "continue": "abc"},
                   "items": [pod("u1", "9"), {"metadata": {"name": "no-uid"}}, 7]})
            .to_string()
            .into_bytes(),
        ]
        .concat(),
    );
    let watch = [
        json!({"type": "ADDED", "object": pod("u1", "11")}),
        json!({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}),
        json!({"type": "DELETED", "object": pod("u1", "13")}),
        json!({"type": "ERROR", "object": {"code": 410, "message": "too old"}}),
    ]
    .map(|v| v.to_string())
    .join("\n  \n");
    push(
        "kube",
        "watch",
        [vec![1, 5], watch.into_bytes(), b"\n{\"partial".to_vec()].concat(),
    );
    out
}

#[test]
#[ignore = "rewrites the seed files of tests/fuzz/corpus"]
fn write_seeds() {
    for (target, name, data) in seeds() {
        let dir = corpus().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}

#[test]
fn the_seeds_hold_and_are_the_ones_kept() {
    for (target, name, data) in seeds() {
        assert!(fuzzing::run(target, &data));
        let kept = corpus().join(target).join(format!("seed-{name}"));
        assert_eq!(
            std::fs::read(&kept).ok().as_deref(),
            Some(&data[..]),
            "{} is stale: run `cargo test -p agent-user --test fuzz_corpus -- --ignored write_seeds`",
            kept.display()
        );
    }
}

/// The seeds start the fuzzers past the first check of each parser (a seed refused at once
/// would leave the deeper code to chance).
#[test]
fn the_seeds_reach_past_the_first_check() {
    let all = seeds();
    let seed = |t: &str, n: &str| {
        all.iter()
            .find(|(a, b, _)| *a == t && b == n)
            .map(|(_, _, d)| d.clone())
            .unwrap_or_else(|| panic!("no seed {t}/{n}"))
    };
    let mut keys = tether::credentials::token::Keys::default();
    let set = tether::credentials::trust::parse_jwks(fuzzing::issuer_jwks().as_bytes()).unwrap();
    keys.by_issuer.insert(ISSUER.into(), Ok(set));
    let t = fuzzing::sign(fuzzing::test_header().as_bytes(), &seed("token", "signed-claims")[1..]);
    let book = tether::credentials::carriers::ScopeBook::default();
    let checks = tether::credentials::token::Checks {
        keys: &keys,
        scopes: &book,
        max_chain: 4,
    };
    let v = tether::credentials::token::verify(&t, &checks, NOW).expect("the signed seed verifies");
    assert_eq!(v.chain, ["user:alice", "agent:root", "agent:a"]);
    let presented = seed("token", "presented");
    tether::credentials::token::verify(std::str::from_utf8(&presented[1..]).unwrap(), &checks, NOW)
        .expect("the presented seed verifies");
    for (n, r) in records() {
        let decoded = tether::events::decode(&r);
        assert_eq!(decoded.is_ok(), n != "short", "{n}: {decoded:?}");
    }
    tether::policy::parse_policy("pods.yaml", std::str::from_utf8(&seed("rules", "pods")).unwrap())
        .expect("the rules seed loads");
    let page = tether::pods::kube::decode_list(&seed("kube", "list")[1..]).expect("the list seed decodes");
    assert_eq!(page.pods.len(), 3);
    assert!(page.pods[0].is_ok() && page.pods[1].is_err());
}
