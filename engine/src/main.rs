//! The `weft-engine` binary: parse the command line, set up logging, run the command —
//! in-process, or as the daemon, Podman's `netavark` or a CNI plugin. The `weft` command
//! users type is the small front (`src/bin/weft.rs`), which runs this one when a command
//! does not go to a daemon.

use clap::Parser;

fn main() {
    // Podman runs this binary as its network backend under the name `netavark`; a CNI
    // runtime runs it as a plugin (type "weft"), CNI_COMMAND says so.
    let podman = weft::podman::invoked_as_netavark();
    if podman || std::env::var_os("CNI_COMMAND").is_some() {
        let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
            .add_directive("wasmtime_wasi_http=off".parse().expect("a valid directive"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(false)
            .init();
        weft::daemon::raise_nofile_limit();
        std::process::exit(if podman {
            weft::podman::main()
        } else {
            weft::cni::main()
        });
    }
    let cli = weft::cli::Cli::parse();
    let (level, json) = match &cli.cmd {
        // A daemon says what it does (info) unless told otherwise.
        weft::cli::Cmd::Daemon(a) => (
            if std::env::var_os("WEFT_LOG").is_none() && cli.log_level == "warn" {
                "info"
            } else {
                cli.log_level.as_str()
            },
            a.log_format == "json",
        ),
        _ => (cli.log_level.as_str(), false),
    };
    // wasmtime-wasi-http logs a line per failed or malformed plugin request, which a plugin
    // could repeat without end: off, at every level. What they would say is in the one line
    // per call that weft's HTTP gate logs for the plugin (plugin::egress).
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
        .add_directive("wasmtime_wasi_http=off".parse().expect("a valid directive"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        fmt.json().init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    weft::daemon::raise_nofile_limit();
    std::process::exit(weft::cli::run(cli));
}
