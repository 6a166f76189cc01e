//! The `weft` binary: the small front. It hands a command to a running daemon, or runs the
//! engine binary, `weft-engine`, with the same command line (see `weft::cli::front`).

fn main() {
    weft::cli::front::main()
}
