//! The `fslens` command: all the work lives in the library (`fslens::cli`).

fn main() -> std::process::ExitCode {
    fslens::cli::main()
}
