fn main() {
    std::process::exit(codex::cli::main());
}
