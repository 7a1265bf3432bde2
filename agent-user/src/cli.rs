//! The `tether` command line.
use std::{os::unix::process::CommandExt, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use std::time::Duration;

use crate::{
    api,
    credentials::{devissuer, token::DEFAULT_MAX_CHAIN, trust::Trust},
    daemon,
    model::Mode,
    policy,
};

#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    about = "Keeps AI-agent processes inside the task they were given: eBPF probes see every exec, connect/send and file write of agent processes and their descendants, and the daemon writes them as OCSF audit events.",
    after_help = "Run `tether run` as root. Logs go to stderr (RUST_LOG=debug for more); audit events and alerts go where --audit and --alerts say (stdout by default)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (root): load the probes, adopt running agents, write audit events, and
    /// contain agent processes by the rule files' `mode` (the shipped default: observe,
    /// nothing is denied or killed). SIGHUP reloads the rule files.
    ///
    /// At start the daemon probes the kernel (see `tether status`) and logs the mechanism it
    /// uses for each hook and any feature degraded because the kernel's BTF lacks a field.
    /// TETHER_HIDE_BTF_FIELDS=struct.field,... treats those fields as absent, to see that
    /// degraded behaviour on a kernel that has them (e.g. dentry.d_name.name).
    Run {
        /// Rule file(s) with agent selectors; repeatable. Default: the built-in policies/default.yaml.
        #[arg(long = "policy", value_name = "FILE")]
        policies: Vec<PathBuf>,
        #[command(flatten)]
        delivery: Box<crate::delivery::DeliveryArgs>,
        /// Leave out the BPF LSM path hooks, which (where BPF LSM is in effect) refuse
        /// name-based writes (create, rename, unlink, mkdir, rmdir, link, symlink, truncate,
        /// chmod, chown) before they happen. Without them those operations are judged at the
        /// syscall's exit and killed after the fact, and an O_CREAT refused by file_open
        /// leaves an empty file (both reported). For ruling the hooks out while diagnosing.
        #[arg(long)]
        no_lsm_path_hooks: bool,
        /// Path of the agent API socket (mode 0666: processes register or bind themselves;
        /// used by `tether exec`).
        #[arg(long, value_name = "PATH", default_value = api::DEFAULT_SOCKET, env = "TETHER_SOCKET")]
        socket: PathBuf,
        /// Path of the admin API socket (mode 0600, root: bind credentials to other pids,
        /// revoke and list tasks; used by `tether tasks`).
        #[arg(long, value_name = "PATH", default_value = api::DEFAULT_ADMIN_SOCKET, env = "TETHER_ADMIN_SOCKET")]
        admin_socket: PathBuf,
        #[command(flatten)]
        admins: Box<AdminArgs>,
        /// Trust task credentials from ISSUER, verified with the keys of JWKS (a file, or an
        /// https:// URL refreshed every 5 minutes; the last good keys stay when a refresh fails).
        /// Repeatable; rule files may add more under `trust:`.
        #[arg(long = "trust", value_name = "ISSUER=JWKS", value_parser = Trust::parse)]
        trust: Vec<Trust>,
        /// PEM bundle of the CAs to trust for JWKS URLs (default: the web PKI roots).
        #[arg(long, value_name = "FILE")]
        ca_bundle: Option<PathBuf>,
        /// Longest delegation chain a credential may carry (actors after the principal).
        #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CHAIN)]
        max_delegation_depth: usize,
        /// Write the daemon's pid to FILE once every probe is attached (for orchestration and tests).
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR/metrics, with /healthz and /readyz (ready
        /// once the probes are attached and the rules compiled), e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        #[command(flatten)]
        kube: crate::pods::KubeArgs,
        #[command(flatten)]
        persist: crate::persist::PersistArgs,
    },
    /// Remove what `tether run --persist` pinned (root): every generation's links (their
    /// programs detach at once), then the state maps. For uninstalling, or to start from
    /// nothing. Refused while a daemon runs with the same --state-dir.
    Unpin {
        /// The daemon's --pin-dir.
        #[arg(long, value_name = "DIR", default_value = crate::persist::DEFAULT_PIN_DIR, env = "TETHER_PIN_DIR")]
        pin_dir: PathBuf,
        /// The daemon's --state-dir (its lock says whether a daemon still runs).
        #[arg(long, value_name = "DIR", default_value = crate::persist::DEFAULT_STATE_DIR, env = "TETHER_STATE_DIR")]
        state_dir: PathBuf,
        /// Also remove the state file (the tasks a next daemon would adopt).
        #[arg(long)]
        state: bool,
        /// Then stay running until SIGTERM or SIGINT (as the container of the DaemonSet's
        /// uninstall overlay, which must not exit and be restarted).
        #[arg(long)]
        wait: bool,
    },
    /// Run CMD as a tracked agent: register this process with the daemon (with --token: bind
    /// the task credential to it, and wait for the daemon's verdict), then exec CMD (same pid).
    /// If the daemon cannot be reached, or refuses the credential, CMD is not run.
    Exec {
        /// Path of the daemon's API socket.
        #[arg(long, value_name = "PATH", default_value = api::DEFAULT_SOCKET, env = "TETHER_SOCKET")]
        socket: PathBuf,
        /// The task credential (a compact JWS) to bind, from FILE.
        #[arg(long, value_name = "FILE")]
        token: Option<PathBuf>,
        /// The daemon's executable: the process serving --socket must run it, as `tether
        /// run`, as root, from a socket file root owns (default: this executable). A socket
        /// or server an agent set up is refused and CMD is not run.
        #[arg(long, value_name = "PATH")]
        daemon_exe: Option<PathBuf>,
        /// The daemon runs in another pid namespace (agents in containers of their own, the
        /// daemon in the host's): its pid cannot be seen, so only the socket's owner and the
        /// serving process's uid are checked.
        #[arg(long)]
        daemon_in_other_pid_namespace: bool,
        /// The command and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<String>,
    },
    /// Ask the running daemon what this kernel allows and what is in effect: the BPF LSM,
    /// fentry, cgroup sock_addr, ring buffer, bpf_send_signal and Landlock probes (real loads at
    /// start), the mechanism observing each hook and what it could enforce, features degraded
    /// because the kernel lacks a struct field, and the loss counters.
    Status {
        /// Path of the daemon's API socket.
        #[arg(long, value_name = "PATH", default_value = api::DEFAULT_SOCKET, env = "TETHER_SOCKET")]
        socket: PathBuf,
        /// Print the report as JSON (as the API returns it).
        #[arg(long)]
        json: bool,
    },
    /// Task credentials: a development issuer (keygen, issue).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Tasks bound on the running daemon (admin socket, root): list, bind to a pid, revoke.
    Tasks {
        /// Path of the daemon's admin socket.
        #[arg(long, value_name = "PATH", default_value = api::DEFAULT_ADMIN_SOCKET, env = "TETHER_ADMIN_SOCKET")]
        admin_socket: PathBuf,
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// Rule files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Switch the running daemon's global containment mode (admin socket, root), without a
    /// restart and without losing tracked processes: `observe` decides and reports what
    /// would have happened, `enforce` denies and kills. Rules with a `mode:` of their own
    /// keep it. The rule files' mode comes back at the next reload.
    Mode {
        #[arg(long, value_name = "PATH", default_value = api::DEFAULT_ADMIN_SOCKET, env = "TETHER_ADMIN_SOCKET")]
        admin_socket: PathBuf,
        #[arg(value_enum)]
        mode: ModeArg,
    },
    /// Reload the running daemon's rule files (as SIGHUP does). A file that fails to compile
    /// is refused with its error and the previous rules stay in force.
    Reload {
        #[arg(long, value_name = "PATH", default_value = api::DEFAULT_ADMIN_SOCKET, env = "TETHER_ADMIN_SOCKET")]
        admin_socket: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Observe,
    Enforce,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Observe => Mode::Observe,
            ModeArg::Enforce => Mode::Enforce,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a signing key (DIR/issuer.key, mode 0600) and the JWKS that verifies it
    /// (DIR/jwks.json, for `tether run --trust ISSUER=DIR/jwks.json`).
    Keygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// EdDSA (Ed25519) or ES256 (P-256).
        #[arg(long, default_value = "EdDSA")]
        alg: String,
    },
    /// Sign a task credential and print it.
    Issue {
        /// The signing key from `tether token keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Issuer (`iss`), as trusted by the daemon.
        #[arg(long)]
        iss: String,
        /// The principal the task acts for (`sub`), e.g. user:alice.
        #[arg(long)]
        sub: String,
        /// A delegate, in order: the first agent the principal delegated to, ..., the current
        /// actor (builds the nested `act` claim). Repeatable.
        #[arg(long = "actor", value_name = "ID")]
        actors: Vec<String>,
        /// Lifetime, e.g. 30s, 10m, 2h.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Valid only from now + this (`nbf`).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        not_before: Duration,
        /// The scope, a JSON file: {"exec": [...], "connect": [...], "write": [...]}.
        #[arg(long, value_name = "FILE")]
        scope: PathBuf,
        /// Audience (`aud`); repeatable. Tether accepts only credentials naming "tether".
        #[arg(long = "aud", default_value = "tether")]
        aud: Vec<String>,
        /// The task id (`jti`); default: random.
        #[arg(long)]
        jti: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// List the bound tasks with their processes.
    List,
    /// Bind a task credential to a running process (and what it starts from then on).
    Bind {
        #[arg(long)]
        pid: u32,
        #[arg(long, value_name = "FILE")]
        token: PathBuf,
    },
    /// Revoke a task: its processes lose their scope at once (the kernel flags their next
    /// action), and its credential can never be bound again.
    Revoke { jti: String },
}

/// A token file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the token {}: {source}", path.display())]
pub struct TokenFileError {
    path: PathBuf,
    source: std::io::Error,
}

fn read_token(path: &std::path::Path) -> Result<String, TokenFileError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|source| TokenFileError {
            path: path.to_path_buf(),
            source,
        })
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate rule files; errors name file:line and the cause.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Run decision fixtures (the format of policies/fixtures: a rule file, and cases of an
    /// attempt, a credential and the expected action, rule and mode) for your own CI. Prints
    /// each case and `N passed, M failed`; exits 1 when a case fails, 2 when a fixture or its
    /// rule file is malformed.
    Test {
        /// Fixture files, or directories of them (*.yaml).
        #[arg(required = true, value_name = "FILE-or-DIR")]
        paths: Vec<PathBuf>,
    },
}

/// `namespace a|b, label k=v` for `tether policy check`.
fn pod_match_text(m: &crate::policy::engine::PodMatch) -> String {
    let mut parts = Vec::new();
    if !m.namespace.is_empty() {
        parts.push(format!(
            "namespace {}",
            m.namespace.iter().cloned().collect::<Vec<_>>().join("|")
        ));
    }
    parts.extend(m.pod_labels.iter().map(|(k, v)| format!("label {k}={v}")));
    parts.join(", ")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            policies,
            delivery,
            no_lsm_path_hooks,
            socket,
            admin_socket,
            admins,
            trust,
            ca_bundle,
            max_delegation_depth,
            ready_file,
            metrics,
            kube,
            persist,
        } => {
            init_logging();
            let opts = daemon::RunOptions {
                policies,
                delivery: *delivery,
                lsm_path_hooks: !no_lsm_path_hooks,
                socket,
                admin_socket,
                admins: api::Admins {
                    uids: admins.admin_uids,
                    gids: admins.admin_groups,
                },
                ready_file,
                trust,
                ca_bundle,
                max_chain: max_delegation_depth,
                metrics,
                kube,
                persist: persist.resolve(),
            };
            // One worker for the event loop, two for the API, the watchers and the webhook.
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(3)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tether: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // The daemon runs on a worker: the thread that waits on the rings and sockets
            // then runs what they woke (under block_on, each wakeup would be handed from
            // the worker polling epoll to this thread).
            let ran = rt.block_on(async { tokio::spawn(daemon::run(opts)).await });
            match ran.unwrap_or_else(|e| Err(anyhow::anyhow!("the daemon's task failed: {e}"))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tether: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Unpin {
            pin_dir,
            state_dir,
            state,
            wait,
        } => {
            let p = crate::persist::Persist { pin_dir, state_dir };
            let lock = || p.state_dir.exists().then(|| p.lock()).transpose();
            let done = lock().and_then(|_lock| {
                let removed = p.unpin_all()?;
                if state {
                    match std::fs::remove_file(p.state_file()) {
                        Ok(()) => println!("removed {}", p.state_file().display()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(crate::persist::PersistError::Io {
                                path: p.state_file().display().to_string(),
                                source: e,
                            });
                        }
                    }
                }
                Ok(removed)
            });
            let code = match done {
                Ok(removed) if removed.is_empty() => {
                    println!("nothing pinned under {}", p.pin_dir.display());
                    ExitCode::SUCCESS
                }
                Ok(removed) => {
                    for r in removed {
                        println!("unpinned {}", p.pin_dir.join(r).display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tether unpin: {e}");
                    ExitCode::FAILURE
                }
            };
            if wait {
                use nix::sys::signal::{SigSet, Signal};
                let mut set = SigSet::empty();
                set.add(Signal::SIGTERM);
                set.add(Signal::SIGINT);
                if set.thread_block().is_ok() {
                    let _ = set.wait();
                }
            }
            code
        }
        Command::Exec {
            socket,
            token,
            daemon_exe,
            daemon_in_other_pid_namespace,
            command,
        } => {
            let refuse = |what: &dyn std::fmt::Display| {
                eprintln!("tether exec: {what}; not running {:?}", command[0]);
                ExitCode::from(126)
            };
            let exe = match daemon_exe.map_or_else(std::env::current_exe, Ok) {
                Ok(p) => p,
                Err(e) => return refuse(&format_args!("cannot name the daemon's executable: {e}")),
            };
            let check = api::DaemonCheck {
                exe,
                other_pid_namespace: daemon_in_other_pid_namespace,
            };
            let mut session = match api::Session::open(&socket, Some(&check)) {
                Ok(s) => s,
                Err(e) => return refuse(&e),
            };
            let verdict = match &token {
                Some(path) => match read_token(path) {
                    Ok(t) => session.bind_self(&t),
                    Err(e) => return refuse(&e),
                },
                None => session.register_self(),
            };
            let reply = match verdict {
                Ok(v) => v,
                Err(e) => return refuse(&e),
            };
            // The sandbox, from the daemon's plan: applied to this process, so CMD and
            // everything it starts run under it; then reported back (status, events).
            let plan = match serde_json::from_value::<crate::contain::sandbox::Plan>(reply["sandbox"].clone()) {
                Ok(p) => p,
                Err(e) => return refuse(&format_args!("the daemon sent no usable sandbox plan ({e})")),
            };
            let layers = match crate::contain::sandbox::apply(&plan) {
                Ok(l) => l,
                Err(e) => return refuse(&format_args!("cannot apply the task's sandbox: {e}")),
            };
            if let Err(e) = session.report_sandbox(&layers) {
                return refuse(&format_args!("cannot report the sandbox to the daemon: {e}"));
            }
            drop(session);
            let err = std::process::Command::new(&command[0]).args(&command[1..]).exec();
            eprintln!("tether exec: cannot run {:?}: {err}", command[0]);
            ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
        Command::Token { command } => token_command(command),
        Command::Tasks { admin_socket, command } => {
            let result = match command {
                TasksCommand::List => api::request(&admin_socket, "GET", "/v1/tasks", None).map_err(Into::into),
                TasksCommand::Bind { pid, token } => read_token(&token).map_err(Into::into).and_then(|token| {
                    let body = serde_json::to_value(api::BindOtherBody { token, pid })?;
                    Ok(api::request(&admin_socket, "POST", "/v1/tasks", Some(&body))?)
                }),
                TasksCommand::Revoke { jti } => {
                    let path = format!("/v1/tasks/{}/revoke", url_segment(&jti));
                    api::request(&admin_socket, "POST", &path, None).map_err(Into::into)
                }
            };
            print_reply("tasks", result)
        }
        Command::Mode { admin_socket, mode } => {
            let result = serde_json::to_value(api::ModeBody { mode: mode.into() })
                .map_err(api::ClientError::from)
                .and_then(|body| api::request(&admin_socket, "POST", "/v1/mode", Some(&body)));
            print_reply("mode", result.map_err(Into::into))
        }
        Command::Reload { admin_socket } => print_reply(
            "reload",
            api::request(&admin_socket, "POST", "/v1/reload", None).map_err(Into::into),
        ),
        Command::Status { socket, json } => match api::status_of(&socket) {
            Ok(s) if json => {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Ok(s) => {
                print!("{}", status_text(&s));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tether status: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Policy {
            command: PolicyCommand::Check { files },
        } => {
            let mut failed = false;
            for f in &files {
                match policy::load_policy(&[f]) {
                    Ok(p) => println!(
                        "{}: ok (agent selectors [{}], {} trusted issuers, guardrails [{}], mode {})",
                        f.display(),
                        p.selectors.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", "),
                        p.trust.len(),
                        p.rules
                            .guardrail_ids()
                            .iter()
                            .enumerate()
                            .map(|(i, id)| match p.rules.guardrail_pods(i) {
                                None => id.to_string(),
                                Some(m) => format!("{id} (only in pods: {})", pod_match_text(m)),
                            })
                            .collect::<Vec<_>>()
                            .join(", "),
                        p.rules.mode.as_str(),
                    ),
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Command::Policy {
            command: PolicyCommand::Test { paths },
        } => match policy::fixtures::run(&paths) {
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
            Ok(results) => {
                let failed = results.iter().filter(|r| r.failure.is_some()).count();
                for r in &results {
                    match &r.failure {
                        None => println!("ok    {}: {}", r.file.display(), r.name),
                        Some(why) => println!("FAIL  {}: {}: {why}", r.file.display(), r.name),
                    }
                }
                println!("{} passed, {failed} failed", results.len() - failed);
                if failed > 0 {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
        },
    }
}

/// The status report for people.
pub fn status_text(s: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    let _ = writeln!(
        out,
        "tether pid {} on kernel {}, mode {}, up {}s",
        s["pid"],
        str_of(&s["kernel"]),
        str_of(&s["mode"]),
        s["uptime_s"]
    );
    let _ = writeln!(out, "kernel features (probed by real loads at start):");
    if let Some(f) = s["features"].as_object() {
        for (name, v) in f {
            if let Some(p) = v.as_object() {
                let yes = p.get("available").and_then(|a| a.as_bool()).unwrap_or(false);
                let detail = p.get("detail").and_then(|d| d.as_str()).unwrap_or("");
                let _ = writeln!(out, "  {name:<17} {:<3}  {detail}", if yes { "yes" } else { "no" });
            } else if !v.is_null() {
                let _ = writeln!(out, "  {name:<17} {v}");
            }
        }
    }
    let _ = writeln!(out, "hooks:");
    for h in s["hooks"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<11} {}\n              enforcement: {}",
            str_of(&h["hook"]),
            str_of(&h["mechanism"]),
            str_of(&h["enforcement"])
        );
    }
    let degraded = s["degraded"].as_array().cloned().unwrap_or_default();
    if degraded.is_empty() {
        let _ = writeln!(out, "degraded: nothing (the kernel's BTF has every field Tether reads)");
    } else {
        let _ = writeln!(out, "DEGRADED:");
        for d in degraded {
            let _ = writeln!(
                out,
                "  {}: {} (missing {})",
                str_of(&d["feature"]),
                str_of(&d["effect"]),
                d["missing"]
            );
        }
    }
    match s["sandboxes"].as_array().filter(|a| !a.is_empty()) {
        None => {
            let _ = writeln!(out, "sandboxes (tether exec): none");
        }
        Some(list) => {
            let _ = writeln!(out, "sandboxes (tether exec):");
            for b in list {
                let _ = writeln!(
                    out,
                    "  pid {} task {}: {}",
                    b["root_pid"],
                    b["task"].as_str().unwrap_or("-"),
                    str_of(&b["summary"])
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "tracked processes {}, events written {}, decode errors {}, kernel counters {}",
        s["tracked_processes"], s["events_written"], s["decode_errors"], s["kernel_counters"]
    );
    out
}

/// Who may call the admin socket, beyond its file mode.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Only this user (a name or a uid) may call the admin socket; repeatable, together with
    /// --admin-group. Tracked processes are refused whatever these say.
    #[arg(long = "admin-uid", value_name = "USER", value_parser = parse_user)]
    admin_uids: Vec<u32>,
    /// Members of this group (a name or a gid; primary or supplementary) may call the admin
    /// socket; repeatable. The socket is then owned by the first group, mode 0660.
    #[arg(long = "admin-group", value_name = "GROUP", value_parser = parse_group)]
    admin_groups: Vec<u32>,
}

/// A user or group of `--admin-uid`/`--admin-group` that does not resolve on this host.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("no user named {0:?}")]
    NoUser(String),
    #[error("looking up user {name:?}: {source}")]
    UserLookup { name: String, source: nix::Error },
    #[error("no group named {0:?}")]
    NoGroup(String),
    #[error("looking up group {name:?}: {source}")]
    GroupLookup { name: String, source: nix::Error },
}

/// A user name or uid, resolved now.
fn parse_user(s: &str) -> Result<u32, AccountError> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(AccountError::NoUser(s.to_string())),
        Err(source) => Err(AccountError::UserLookup {
            name: s.to_string(),
            source,
        }),
    }
}

/// A group name or gid, resolved now.
fn parse_group(s: &str) -> Result<u32, AccountError> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(s) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(AccountError::NoGroup(s.to_string())),
        Err(source) => Err(AccountError::GroupLookup {
            name: s.to_string(),
            source,
        }),
    }
}

/// Percent-encodes a URL path segment.
fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn token_command(command: TokenCommand) -> ExitCode {
    let result = match command {
        TokenCommand::Keygen { out, alg } => devissuer::keygen(&out, &alg).map(|k| {
            println!(
                "key {} ({:?}): {} and {}",
                k.kid,
                k.alg,
                out.join("issuer.key").display(),
                out.join("jwks.json").display()
            );
        }),
        TokenCommand::Issue {
            key,
            iss,
            sub,
            actors,
            ttl,
            not_before,
            scope,
            aud,
            jti,
        } => devissuer::load(&key).and_then(|k| {
            let req = devissuer::IssueRequest {
                iss,
                sub,
                actors,
                aud,
                ttl,
                not_before,
                jti,
                scope: devissuer::read_scope(&scope)?,
            };
            let claims = devissuer::claims(&req, crate::credentials::now_epoch());
            println!("{}", devissuer::sign(&k, &claims)?);
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether token: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints an admin API reply (pretty JSON) or the error.
fn print_reply(what: &str, result: anyhow::Result<serde_json::Value>) -> ExitCode {
    match result {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tether {what}: {e}");
            ExitCode::FAILURE
        }
    }
}
