//! The desktop app's tests: its commands through Tauri's IPC on the mock runtime against a
//! real daemon, and the real app in a real (virtual) X display.

// Test helpers: a failed unwrap is a failed test, with the value that broke it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod commands;
mod overview;
mod window;
