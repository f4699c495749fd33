fn main() -> std::process::ExitCode {
    hookhost::cli::main()
}
