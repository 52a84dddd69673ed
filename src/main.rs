use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the write path allocates many small buffers
/// across threads, where glibc's arenas cost a fifth of the leader's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` of mimalloc.h (the same number in mimalloc 2 and 3, which
/// never renumber an option; the Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before returning it to the OS. sled writes its
/// log through buffers of a segment's size (8 MiB, `storage::sm`), each a new
/// allocation: with mimalloc's default of one second the memory had gone back to the
/// OS before the next buffer came, and every 4 KiB sled wrote cost a page fault that
/// zeroed a page — a tenth of a follower's CPU at 64 connections (docs/performance.md,
/// "The allocator's purge delay").
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

#[tokio::main]
async fn main() -> ExitCode {
    // mimalloc reads its environment when the process starts: a delay set there wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's global options, which it reads atomically; any
        // value is valid for it. slct's one `unsafe` (with its test's): mimalloc has no
        // safe setter.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // openraft logs every failed RPC to a dead peer (five a second);
                // `raft::peers` and the node's leadership task say what matters once.
                .unwrap_or_else(|_| "info,openraft=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match slct::cli::run(slct::cli::Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slct: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// Option 15 is the purge delay: it holds mimalloc 3's default for that option
    /// (1,000 ms), or what the environment set. Fails if an upgrade renumbered it.
    #[test]
    fn option_15_is_mimallocs_purge_delay() {
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000);
        // SAFETY: reads one of mimalloc's global options.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, expected);
    }
}
