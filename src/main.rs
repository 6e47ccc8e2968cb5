//! The `gatevault` binary: everything happens in [`gatevault::cli`].

fn main() -> std::process::ExitCode {
    gatevault::cli::main()
}
