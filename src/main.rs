// The node allocates and frees small state records for every slot it prepares; mimalloc
// serves those faster than the system allocator (measured in `cargo bench --bench engine`,
// which links the same allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(codex::cli::main());
}
