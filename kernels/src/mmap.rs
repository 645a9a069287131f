//! Read-only memory maps of model files.
//!
//! Weights are served straight from the page cache; mapping a file is the one `unsafe`
//! operation the engine needs outside the compute kernels, so it lives here with them.

use std::fs::File;
use std::io;

pub use memmap2::Mmap;

/// Maps `file` read-only.
pub fn map_readonly(file: &File) -> io::Result<Mmap> {
    // SAFETY: the map is read-only and owned by its caller. Model files are not expected
    // to change while the engine runs; if another process truncates or rewrites the file
    // anyway, reads of the map may see the new bytes or fault (SIGBUS). That is the
    // documented limitation of serving weights from a memory map (llama.cpp shares it).
    unsafe { Mmap::map(file) }
}
