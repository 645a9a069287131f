//! The `Oasis Admin` desktop app: builds the app from the library and runs its window.

// No console window next to the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use std::process::ExitCode;

fn main() -> ExitCode {
    let app = desktop_ui::Settings::from_env()
        .and_then(|settings| desktop_ui::run_app(tauri::Builder::default(), settings));
    match app {
        Ok(app) => {
            app.run(|_, _| {});
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oasis admin: {e}");
            ExitCode::FAILURE
        }
    }
}
