//! The `tether` command line.
use std::{os::unix::process::CommandExt, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{api, daemon, policy};

#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    about = "Keeps AI-agent processes inside the task they were given: eBPF probes see every exec, connect/send and file write of agent processes and their descendants, and the daemon writes them as OCSF audit events.",
    after_help = "Run `tether run` as root. Logs go to stderr (RUST_LOG=debug for more); audit events go to stdout and/or --audit-log."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (root): load the probes, adopt running agents, write audit events.
    /// Observe-only: nothing is denied or killed.
    ///
    /// At start the daemon probes the kernel (see `tether status`) and logs the mechanism it
    /// uses for each hook and any feature degraded because the kernel's BTF lacks a field.
    /// TETHER_HIDE_BTF_FIELDS=struct.field,... treats those fields as absent, to see that
    /// degraded behaviour on a kernel that has them (e.g. dentry.d_name.name).
    Run {
        /// Rule file(s) with agent selectors; repeatable. Default: the built-in policies/default.yaml.
        #[arg(long = "policy", value_name = "FILE")]
        policies: Vec<PathBuf>,
        /// Also append audit events (one OCSF JSON object per line) to FILE.
        #[arg(long, value_name = "FILE")]
        audit_log: Option<PathBuf>,
        /// Do not write audit events to stdout.
        #[arg(long)]
        no_stdout: bool,
        /// Path of the local API socket (used by `tether exec`).
        #[arg(long, value_name = "PATH", default_value = api::DEFAULT_SOCKET, env = "TETHER_SOCKET")]
        socket: PathBuf,
        /// Write the daemon's pid to FILE once every probe is attached (for orchestration and tests).
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
    },
    /// Run CMD as a tracked agent: register this process with the daemon, then exec CMD
    /// (same pid). If the daemon cannot be reached CMD is not run.
    Exec {
        /// Path of the daemon's API socket.
        #[arg(long, value_name = "PATH", default_value = api::DEFAULT_SOCKET, env = "TETHER_SOCKET")]
        socket: PathBuf,
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
    /// Rule files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate rule files; errors name file:line and the cause.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
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
            audit_log,
            no_stdout,
            socket,
            ready_file,
        } => {
            init_logging();
            let opts = daemon::RunOptions {
                policies,
                audit_log,
                stdout: !no_stdout,
                socket,
                ready_file,
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tether: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(daemon::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tether: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Exec { socket, command } => {
            if let Err(e) = api::register_self(&socket) {
                eprintln!("tether exec: {e}; not running {:?}", command[0]);
                return ExitCode::from(126);
            }
            let err = std::process::Command::new(&command[0]).args(&command[1..]).exec();
            eprintln!("tether exec: cannot run {:?}: {err}", command[0]);
            ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
        Command::Status { socket, json } => match api::status(&socket) {
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
                match policy::load(&[f]) {
                    Ok(s) => println!(
                        "{}: ok ({} exe selectors, {} comm selectors)",
                        f.display(),
                        s.exe.len(),
                        s.comm.len()
                    ),
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
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
    let _ = writeln!(
        out,
        "tracked processes {}, events written {}, decode errors {}, kernel counters {}",
        s["tracked_processes"], s["events_written"], s["decode_errors"], s["kernel_counters"]
    );
    out
}
