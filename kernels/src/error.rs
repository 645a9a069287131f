//! The kernels' error type: wrong lengths, shapes or types handed in by a caller, and
//! failures of the GPU (a driver, compiler or cuBLAS call that returned an error).

/// An operation was given data that does not fit its description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("{op}: {what} is {got} bytes, expected {expected}")]
    Length {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{op}: {what} must be a multiple of {block} for {ty}, got {got}")]
    NotBlockMultiple {
        op: &'static str,
        what: &'static str,
        ty: &'static str,
        block: usize,
        got: usize,
    },
    #[error("{op}: {what} is {got}, expected {expected}")]
    Shape {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{op}: type {ty} is not supported here")]
    UnsupportedType { op: &'static str, ty: &'static str },
    /// A CUDA call failed: the driver, NVRTC or cuBLAS said why.
    #[error("GPU {op}: {detail}")]
    Cuda { op: &'static str, detail: String },
    /// No GPU can be used (no driver, no device, a missing library, a build without CUDA).
    #[error("no usable GPU: {0}")]
    Unavailable(String),
}
