//! The `weft` binary: parse the command line, set up logging, run the command.

use clap::Parser;

fn main() {
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
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
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
    std::process::exit(weft::cli::run(cli));
}
