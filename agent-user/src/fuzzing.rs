//! The bodies of the fuzz targets: each takes arbitrary bytes, feeds them to one parser of
//! input an agent or a network peer controls, and asserts what must hold whatever the bytes
//! (a panic is a finding). `tests/fuzz` runs them under libFuzzer (`cargo xtask fuzz`); the
//! corpus kept there, every crash found included, runs through them in plain `cargo test`
//! (agent-user/tests/fuzz_corpus.rs).
//!
//! | target   | what it feeds                                   | what must hold |
//! |----------|-------------------------------------------------|----------------|
//! | `token`  | a compact JWS as presented, or claims/headers signed with a test key | only a well-signed, in-time, audience-bound token of an allowed algorithm passes; a tampered one never |
//! | `jwks`   | a JWKS document (and key selection by `kid`)     | a verified token's key is the issuer's key of that `kid` |
//! | `scope`  | a scope as JSON or as pattern lines              | compiles or says why; a scope is within itself; matching and the kernel-map compile never panic |
//! | `rules`  | a rule file                                      | loads or fails naming the file; guardrails compile to kernel maps |
//! | `record` | a ring-buffer record of any kind and length      | decodes or says why; the engine judges what decodes |
//! | `ocsf`   | a record plus hostile process strings            | every sink's framing holds: one event, one line/frame, the JSON round-trips |
//! | `api`    | raw HTTP bytes on either local socket            | the agent socket never reaches an admin call; a tracked caller never passes the admin gate |
//! | `kube`   | a pod list page, or a watch stream in chunks     | lines split as a reference splitter does; every decoded pod has uid, name, namespace |
use std::{
    net::IpAddr,
    sync::{Arc, Mutex, OnceLock, RwLock},
};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{
    api::{self, ApiError, ApiState, Call, Peer, Request},
    contain::compile,
    credentials::{
        scope::{CompiledScope, Proto, ScopeSpec},
        token::{self, AUDIENCE, Keys, TokenError},
        trust,
    },
    delivery::{Stream, syslog},
    events,
    lineage::{NoProc, ProcSnapshot, ProcessTable, Reason},
    ocsf,
    pods::kube,
    policy::{
        self,
        engine::{Credential, Rules},
    },
};

/// A fuzz target: its name (the file under tests/fuzz/fuzz_targets) and body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("token", token),
    ("jwks", jwks),
    ("scope", scope),
    ("rules", rules),
    ("record", record),
    ("ocsf", ocsf),
    ("api", api),
    ("kube", kube),
];

/// Runs target `name` on `data`; false when there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => {
            f(data);
            true
        }
        None => false,
    }
}

/// The issuer the test key signs for, and the key's `kid`.
pub const ISSUER: &str = "https://issuer.fuzz";
pub const KID: &str = "k1";
/// The time every verification runs at.
pub const NOW: i64 = 1_800_000_000;
const MAX_CHAIN: usize = 4;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The test issuer's Ed25519 key (fixed, so a corpus token stays valid).
fn signing_key() -> &'static ed25519_dalek::SigningKey {
    static KEY: OnceLock<ed25519_dalek::SigningKey> = OnceLock::new();
    KEY.get_or_init(|| ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]))
}

/// The test issuer's JWKS document.
pub fn issuer_jwks() -> String {
    let x = b64(signing_key().verifying_key().as_bytes());
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": KID, "x": x}]}).to_string()
}

/// What the fuzzed verifications are checked against: the test issuer, no scope bundles.
fn checks(keys: &Keys) -> token::Checks<'_> {
    static BOOK: OnceLock<crate::credentials::carriers::ScopeBook> = OnceLock::new();
    token::Checks {
        keys,
        scopes: BOOK.get_or_init(Default::default),
        max_chain: MAX_CHAIN,
    }
}

fn issuer_keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = Keys::default();
        let set = trust::parse_jwks(issuer_jwks().as_bytes()).expect("the test JWKS parses");
        keys.by_issuer.insert(ISSUER.into(), Ok(set));
        keys
    })
}

/// A compact JWS of `header` and `payload` (raw bytes, base64url-encoded here) signed with
/// the test key.
pub fn sign(header: &[u8], payload: &[u8]) -> String {
    use ed25519_dalek::Signer;
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = signing_key().sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

/// The header of a token the test key signs.
pub fn test_header() -> String {
    json!({"alg": "EdDSA", "typ": "JWT", "kid": KID}).to_string()
}

/// What a verified token must be, whatever its bytes.
fn assert_sound(v: &token::Verified, keys: &Keys) {
    let c = &v.claims;
    assert!(c.aud.list().iter().any(|a| a == AUDIENCE), "audience {:?}", c.aud);
    assert!(NOW < c.exp, "expired token accepted: exp {}", c.exp);
    assert!(c.nbf.is_none_or(|n| n <= NOW), "token before its nbf accepted");
    assert!(!c.jti.trim().is_empty() && !c.sub.trim().is_empty());
    assert!(
        keys.by_issuer.contains_key(&v.issuer),
        "untrusted issuer {:?}",
        v.issuer
    );
    assert_eq!(c.iss, v.issuer, "verified under another issuer's keys");
    assert!(v.chain.len() - 1 <= MAX_CHAIN, "chain {:?}", v.chain);
    assert_eq!(v.chain[0], c.sub);
    let spec: ScopeSpec = serde_json::from_value(c.scope.clone().expect("the test issuer's scope object"))
        .expect("a verified scope object parses again");
    let again = CompiledScope::compile(&spec).expect("a verified scope compiles again");
    assert_eq!(again.spec, v.scope.spec);
}

/// Token verification: byte 0 picks the shape. 0: the rest is a token as presented. 1: the
/// rest is a claims payload, signed with the test key under the usual header. 2: the rest is
/// a header and a payload (split at the first 0xff), both signed. A token that verifies must
/// be sound (`assert_sound`); the same token with one signature byte changed never verifies.
pub fn token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = issuer_keys();
    let presented = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => sign(test_header().as_bytes(), rest),
        _ => {
            let at = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
            let (h, p) = rest.split_at(at);
            sign(h, p.get(1..).unwrap_or_default())
        }
    };
    let Ok(v) = token::verify(&presented, &checks(keys), NOW) else {
        return;
    };
    let header = jsonwebtoken::decode_header(presented.trim()).expect("a verified token has a header");
    assert!(
        trust::ALGORITHMS.contains(&header.alg),
        "algorithm {:?} accepted",
        header.alg
    );
    assert_sound(&v, keys);
    // One signature byte changed: refused, as a bad signature or a malformed token.
    let t = presented.trim();
    let dot = t.rfind('.').expect("three parts");
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&t[dot + 1..])
        .expect("a verified signature is base64url");
    if let Some(b) = sig.first_mut() {
        *b ^= 0x01;
        let tampered = format!("{}.{}", &t[..dot], b64(&sig));
        match token::verify(&tampered, &checks(keys), NOW) {
            Err(TokenError::BadSignature(_) | TokenError::Malformed(_)) => {}
            other => panic!("a tampered signature gave {other:?}"),
        }
    }
}

/// JWKS parsing and key selection: the document is the test issuer's key set. Every key
/// parsing keeps verifies some algorithm and makes a decoding key; a token of the test key
/// verifies against the set only if a key of the set that names `k1` is the test key.
pub fn jwks(data: &[u8]) {
    let Ok(set) = trust::parse_jwks(data) else { return };
    for k in &set.jwks.keys {
        assert!(
            !trust::key_algorithms(k).is_empty(),
            "a kept key verifies nothing: {k:?}"
        );
        jsonwebtoken::DecodingKey::from_jwk(k).expect("a kept key makes a decoding key");
    }
    let mut keys = Keys::default();
    assert!(trust::merge(&mut keys, ISSUER, Ok(set.clone())).is_none());
    let claims = json!({"iss": ISSUER, "sub": "user:fuzz", "aud": AUDIENCE, "jti": "t1", "exp": NOW + 60, "scope": {}});
    let t = sign(test_header().as_bytes(), claims.to_string().as_bytes());
    if token::verify(&t, &checks(&keys), NOW).is_ok() {
        let k = set
            .jwks
            .keys
            .iter()
            .find(|k| {
                k.common.key_id.as_deref() == Some(KID)
                    && trust::key_algorithms(k).contains(&jsonwebtoken::Algorithm::EdDSA)
            })
            .expect("a verified token's kid is in the set, for its algorithm");
        let x = b64(signing_key().verifying_key().as_bytes());
        match &k.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(p) => {
                assert_eq!(p.x, x, "a token verified under a key that is not the signer's")
            }
            other => panic!("an EdDSA token verified under {other:?}"),
        }
    }
}

/// Probe paths and addresses for matching: fixed ones and some cut from the input.
fn probes(data: &[u8]) -> (Vec<String>, Vec<(Proto, IpAddr, u16)>) {
    let mut paths: Vec<String> = ["/", "/etc/passwd", "/tmp/x", "/dev/char/1:3", "/dev/pts/1", "@abstract"]
        .map(String::from)
        .to_vec();
    paths.extend(
        String::from_utf8_lossy(data)
            .split(['\n', '"', ','])
            .filter(|s| s.starts_with('/') || s.starts_with('@'))
            .map(|s| s.replace(['*', '?', '[', ']', '{', '}'], "x"))
            .take(16),
    );
    let mut nets = Vec::new();
    for ip in ["127.0.0.1", "10.1.2.3", "::1", "::ffff:10.1.2.3", "169.254.169.254"] {
        for port in [0u16, 22, 443, 65535] {
            for proto in [Proto::Tcp, Proto::Udp] {
                nets.push((proto, ip.parse().expect("probe address"), port));
            }
        }
    }
    (paths, nets)
}

/// Scope compilation and matching. Byte 0 even: the rest is a scope as JSON; odd: lines
/// `CLASS PATTERN` (class e, w, c, l, s for exec, write, connect, listen, sockets).
pub fn scope(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let spec: ScopeSpec = if mode % 2 == 0 {
        match serde_json::from_slice(rest) {
            Ok(s) => s,
            Err(_) => return,
        }
    } else {
        let mut s = ScopeSpec::default();
        for line in String::from_utf8_lossy(rest).lines() {
            let (class, pattern) = line.split_once(' ').unwrap_or((line, ""));
            let pattern = pattern.to_string();
            match class {
                "e" => s.exec.push(pattern),
                "w" => s.write.push(pattern),
                "c" => s.connect.push(pattern),
                "l" => s.listen.push(pattern),
                "s" => s.sockets.push(pattern),
                "u" => s.io_uring = true,
                _ => {}
            }
        }
        s
    };
    let Ok(c) = CompiledScope::compile(&spec) else { return };
    assert_eq!(c.within(&c), Ok(()), "a scope is within itself");
    let names = c.host_names();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "host names sorted, unique");
    let (paths, nets) = probes(rest);
    for p in &paths {
        let _ = (
            c.check_exec(p),
            c.check_write(p, true),
            c.check_write(p, false),
            c.check_unix(p),
        );
    }
    for &(proto, ip, port) in &nets {
        let _ = (c.check_connect(proto, ip, port), c.check_listen(proto, ip, port));
    }
    let _ = compile::scope(1, &c);
}

/// Rule files: loads or fails naming the file (file:line where the parser knows it); what
/// loads compiles to kernel maps for every guard set it names, and its verdicts.
pub fn rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let p = match policy::parse_policy("fuzz.yaml", text) {
        Ok(p) => p,
        Err(e) => {
            assert!(
                e.to_string().starts_with("fuzz.yaml"),
                "an error that names no file: {e}"
            );
            return;
        }
    };
    let _ = compile::verdicts(&p.rules);
    let _ = compile::guardrails(&p.rules, 0);
    for i in 0..p.rules.pod_matchers().len().min(8) {
        let _ = compile::guardrails(&p.rules, 1 << i);
    }
}

/// The rules every decoded record is judged by: the built-in default.
fn default_rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        policy::parse_policy(policy::DEFAULT_POLICY_NAME, policy::DEFAULT_POLICY)
            .expect("the default policy loads")
            .rules
    })
}

/// A scope for judging records as a bound task would be.
fn fuzz_scope() -> &'static CompiledScope {
    static SCOPE: OnceLock<CompiledScope> = OnceLock::new();
    SCOPE.get_or_init(|| {
        CompiledScope::compile(&ScopeSpec {
            exec: vec!["/usr/bin/*".into()],
            write: vec!["/tmp/".into()],
            connect: vec!["tcp:127.0.0.1:1-1024".into(), "unix:@fuzz*".into()],
            ..Default::default()
        })
        .expect("the fuzz scope compiles")
    })
}

/// Ring-buffer records: decode never panics; a record shorter than its header is refused;
/// what decodes is judged by the engine, unbound and bound.
pub fn record(data: &[u8]) {
    let ev = match events::decode(data) {
        Ok(ev) => ev,
        Err(_) => return,
    };
    assert!(data.len() >= std::mem::size_of::<agent_common::Header>());
    let _ = (ev.mechanism(), ev.unjudged_reason(), ev.is_action());
    let rules = default_rules();
    if let Some(a) = policy::engine::attempt_of(&ev) {
        let _ = rules.evaluate(&a, Credential::None, 0);
        let bound = Credential::Bound {
            state: crate::credentials::tasks::CredState::Valid,
            scope: fuzz_scope(),
        };
        let d = rules.evaluate(&a, bound, ev.actor().guard_set);
        let _ = (d.alert_kind(), d.would());
        let _ = rules.unjudged(Some(&a), Credential::None, "fuzz");
    }
}

/// One event's line as every sink frames it: the file and webhook sinks write it followed by
/// a newline, syslog sends it as the MSG of one datagram or one octet-counted TCP frame.
fn assert_framed(v: &Value, hostname: &str) {
    let line = v.to_string();
    assert!(!line.contains(['\n', '\r']), "a raw line break in a line: {line:?}");
    let back: Value = serde_json::from_str(&line).expect("the line is one JSON value");
    assert_eq!(&back, v, "the line round-trips");
    let file = format!("{line}\n");
    assert_eq!(file.lines().count(), 1);
    for stream in [Stream::Audit, Stream::Alerts] {
        let msg = syslog::format(stream, hostname, 1, "2026-01-01T00:00:00.000000Z", &line);
        assert!(!msg.contains(['\n', '\r']), "a line break in a syslog message: {msg:?}");
        // <PRI>1 TIMESTAMP HOST APP PID MSGID SD MSG: seven fields, then the message itself.
        let fields: Vec<&str> = msg.splitn(8, ' ').collect();
        assert_eq!(fields.len(), 8, "{msg:?}");
        assert!(fields[2].chars().all(|c| c.is_ascii_graphic()) && !fields[2].is_empty());
        assert_eq!(fields[7], line, "the message is the line");
        let framed = format!("{} {msg}", msg.len());
        let (len, rest) = framed.split_once(' ').expect("a frame has a length");
        assert_eq!(len.parse::<usize>().ok(), Some(rest.len()));
    }
}

/// OCSF rendering of hostile strings: a record (hostile paths, argv, names) rendered with a
/// process table whose exe, argv and comm are cut from the input, and its alert; every
/// sink's framing must hold for both.
pub fn ocsf(data: &[u8]) {
    let Ok(ev) = events::decode(data) else { return };
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{fffd}');
    let mut next = || parts.next().unwrap_or("").chars().take(256).collect::<String>();
    let hostname = next();
    let ctx = ocsf::Context {
        hostname: hostname.clone(),
        boot_epoch_ns: 1_700_000_000_000_000_000,
        ticks_per_sec: 100,
        fmod_ret: data.len().is_multiple_of(2),
        uid_prefix: next(),
        boot: next(),
    };
    let a = ev.actor();
    let mut table = ProcessTable::new(100);
    let snap = ProcSnapshot {
        pid: a.tgid,
        ppid: 1,
        start: crate::lineage::ns_to_ticks(a.start_ns, 100),
        exe: next(),
        argv: vec![next(), next()],
        comm: a.comm.clone(),
        uid: a.uid,
    };
    table.insert_snapshot(&snap, Reason::Registered, None);
    let key = table.apply(&ev, &NoProc);
    let Some(p) = table.get(&key).cloned() else { return };
    let chain = vec![next(), next()];
    let view = ocsf::TaskView {
        jti: "t1",
        iss: ISSUER,
        sub: &chain[0],
        exp: NOW,
        state: crate::credentials::tasks::CredState::Valid,
        kernel_expired: false,
        chain: &chain,
        sandbox: None,
        scope_source: "scope_object",
        txn: None,
    };
    let decision = policy::engine::attempt_of(&ev).map(|a| default_rules().evaluate(&a, Credential::None, 0));
    let mechanism = ctx.mechanism(&ev);
    let outcome = crate::contain::outcome(
        decision.as_ref(),
        &a.kernel,
        &mechanism,
        None,
        false,
        crate::contain::DaemonAct::None,
        false,
    );
    let verdict = ocsf::Verdict {
        mechanism: &mechanism,
        outcome: &outcome,
        kernel: a.kernel,
        decision: decision.as_ref(),
    };
    let identity = crate::model::Identity {
        node: hostname.clone(),
        container: Some(crate::model::Container {
            id: next(),
            runtime: crate::model::Runtime::Unknown,
        }),
        pod: Some(crate::model::PodRef::Unresolved {
            uid: next(),
            resolved: false,
        }),
    };
    let full = ocsf::Form::Full(identity.clone());
    let Some(audit) = ocsf::audit(&ctx, 1, &ev, &p, &p, &table, Some(&view), verdict, full) else {
        return;
    };
    let v = serde_json::to_value(&audit).expect("a record serialises");
    assert_framed(&v, &hostname);
    let compact = ocsf::audit(&ctx, 1, &ev, &p, &p, &table, Some(&view), verdict, ocsf::Form::Compact)
        .expect("an action in either form");
    assert_framed(&serde_json::to_value(&compact).expect("a record serialises"), &hostname);
    let details = match &decision {
        Some(d) => ocsf::decision_details(d, &outcome, Some(view.state)),
        None => ocsf::objects::Details::Refused {
            pid: a.tgid,
            reason: p.argv.join(" "),
        },
    };
    let f = ocsf::Finding {
        kind: "scope-violation",
        title: format!("{} {}", next(), p.exe),
        desc: next(),
        process: Some(&p),
        task: Some(&view),
        related: Some(&audit),
        details,
        time_ns: Some(a.ktime_ns),
        severity_id: (data.len() % 7) as u8,
        outcome: ocsf::Concluded::Logged,
        rule: None,
    };
    let finding = ocsf::finding(&ctx, 2, f, identity);
    assert_framed(
        &serde_json::to_value(&finding).expect("a finding serialises"),
        &hostname,
    );
}

/// What reached the daemon's loop from one connection.
type Seen = Arc<Mutex<Vec<&'static str>>>;

fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Register { .. } => "register",
        Request::Bind { .. } => "bind",
        Request::Refused { .. } => "refused",
        Request::Revoke { .. } => "revoke",
        Request::Tasks => "tasks",
        Request::Status => "status",
        Request::Mode { .. } => "mode",
        Request::Reload => "reload",
        Request::AdminCaller { .. } => "admin-caller",
        Request::Sandbox { .. } => "sandbox",
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// The local API: byte 0 picks the socket (bit 0: admin) and the caller (bit 1: a tracked
/// process, which the loop refuses at the admin gate); the rest is what the caller writes on
/// the connection. The agent socket must never carry an admin call to the loop, a tracked
/// caller must pass nothing beyond the gate, and what comes back is HTTP.
pub fn api(data: &[u8]) {
    let Some((&mode, raw)) = data.split_first() else { return };
    let (admin, tracked) = (mode & 1 != 0, mode & 2 != 0);
    let seen: Seen = Arc::default();
    let response = runtime().block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Call>(8);
        let seen_by_loop = seen.clone();
        let daemon = tokio::spawn(async move {
            while let Some(call) = rx.recv().await {
                let name = request_name(&call.request);
                seen_by_loop.lock().expect("seen").push(name);
                let answer = match call.request {
                    Request::AdminCaller { .. } if tracked => Err(ApiError::new(403, "tracked")),
                    _ => Ok(json!({"ok": name})),
                };
                let _ = call.reply.send(answer);
            }
        });
        let state = ApiState {
            calls: tx,
            keys: Arc::new(RwLock::new(Keys::default())),
            scopes: Default::default(),
            max_chain: MAX_CHAIN,
            admins: api::Admins::default(),
        };
        let peer = Peer {
            pid: Some(4242),
            uid: 0,
            gid: 0,
        };
        let svc = api::router(state, admin).layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let (client, server) = tokio::io::duplex(1 << 16);
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(
            hyper_util::rt::TokioIo::new(server),
            hyper_util::service::TowerToHyperService::new(svc),
        );
        let served = tokio::spawn(conn);
        let (mut rd, mut wr) = tokio::io::split(client);
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let writer = async {
            let _ = wr.write_all(raw).await;
            let _ = wr.shutdown().await;
        };
        let mut out = Vec::new();
        let reader = rd.read_to_end(&mut out);
        let both = async { tokio::join!(writer, reader) };
        if tokio::time::timeout(std::time::Duration::from_secs(5), both)
            .await
            .is_err()
        {
            panic!("the API did not answer or close within 5 s");
        }
        served.abort();
        daemon.abort();
        out
    });
    let seen = seen.lock().expect("seen").clone();
    const ADMIN_ONLY: &[&str] = &["revoke", "tasks", "mode", "reload"];
    if !admin {
        assert!(
            !seen.iter().any(|s| ADMIN_ONLY.contains(s) || *s == "admin-caller"),
            "the agent socket reached {seen:?}"
        );
    } else if tracked {
        assert!(
            seen.iter().all(|s| *s == "admin-caller"),
            "a tracked caller got past the admin gate: {seen:?}"
        );
    } else {
        // Every admin route passes the gate first.
        let mut gated = false;
        for s in &seen {
            if *s == "admin-caller" {
                gated = true;
            } else {
                assert!(gated, "{s} reached the loop before the admin gate: {seen:?}");
            }
        }
    }
    if !response.is_empty() {
        assert!(
            response.starts_with(b"HTTP/1.1 ") || response.starts_with(b"HTTP/1.0 "),
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&response[..response.len().min(64)])
        );
    }
}

/// The Kubernetes decoder. Byte 0 even: the rest is one page of the pod list. Odd: the rest
/// is a watch stream, cut into chunks of sizes taken from byte 1 on; the lines must be those
/// a plain split of the whole stream gives, and every pod decoded has a uid, name and
/// namespace.
pub fn kube(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pod_ok = |m: &kube::PodMeta| !m.uid.is_empty() && !m.name.is_empty() && !m.namespace.is_empty();
    if mode % 2 == 0 {
        if let Ok(page) = kube::decode_list(rest) {
            assert!(page.cont.as_ref().is_none_or(|c| !c.is_empty()));
            for p in page.pods.iter().flatten() {
                assert!(pod_ok(p), "{p:?}");
            }
        }
        return;
    }
    let Some((&seed, stream)) = rest.split_first() else {
        return;
    };
    let mut lines = kube::Lines::default();
    let mut got = Vec::new();
    let mut at = 0;
    let mut step = seed as usize % 17 + 1;
    while at < stream.len() {
        let end = (at + step).min(stream.len());
        got.extend(lines.push(&stream[at..end]).expect("short lines"));
        at = end;
        step = step * 7 % 23 + 1;
    }
    let mut want: Vec<Vec<u8>> = stream.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    want.pop(); // the part after the last newline is not a line yet
    want.retain(|l| !l.iter().all(u8::is_ascii_whitespace));
    assert_eq!(got, want, "the watch lines");
    for l in &got {
        match kube::decode_watch(l) {
            Ok(kube::Watched {
                change: kube::WatchChange::Upsert(m) | kube::WatchChange::Deleted(m),
                ..
            }) => assert!(pod_ok(&m), "{m:?}"),
            Ok(w) => assert!(w.resource_version.as_ref().is_none_or(|v| !v.is_empty())),
            Err(kube::WatchError::Status { code, .. }) => assert_ne!(code, 410),
            Err(_) => {}
        }
    }
}
