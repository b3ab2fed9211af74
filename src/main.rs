//! The `fslens` command: the command line lives here ([`cli`]); all the work lives in the
//! library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
