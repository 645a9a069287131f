//! The kernels' error type: wrong lengths, shapes or types handed in by a caller.

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
}
