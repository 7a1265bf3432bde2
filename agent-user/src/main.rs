/// The daemon allocates and frees a few small strings per event (records, audit lines):
/// mimalloc's per-thread free lists take that at a fraction of glibc malloc's cost
/// (`cargo xtask bench`: daemon CPU per event).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tether::cli::main()
}
