//! The `refact` binary: one entry point for the service and every offline tool.

use clap::Parser;

mod cli;

/// mimalloc instead of the system allocator. Image generation allocates and frees large
/// temporaries (attention scores, activations at full resolution) every step; glibc hands
/// blocks that large back to the OS and the next step faults them in again, zeroed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    refact_engine::device::prefer_single_threaded_elementwise_ops();
    refact_engine::device::pin_matmul_thread_count();
    refact_engine::device::keep_freed_memory_mapped();
    let args = cli::Cli::parse();
    cli::init_tracing();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
