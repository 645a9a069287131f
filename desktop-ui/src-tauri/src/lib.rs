//! Oasis Admin, the desktop shell: a Tauri 2 window around the admin console front end
//! (`desktop-ui/dist`), plus the few commands the console needs that a browser cannot do:
//! keep a list of boxes, pin each box's certificate, keep its token in the OS keyring and
//! call its admin API. The shell is thin: HTTP and TLS pinning live in `oasis-client`,
//! the list in [`boxes`], the tokens in [`tokens`].
//!
//! [`run_app`] is generic over the Tauri runtime so tests drive the same app with
//! `tauri::test::mock_builder()`.

mod boxes;
mod commands;
mod state;
pub mod tokens;

use std::path::PathBuf;

use tauri::{App, Builder, Manager as _, Runtime};

pub use state::{AppState, BoxEntry};
pub use tokens::{TokenError, TokenStore, TokenStoreKind};

/// Overrides the config directory (where `boxes.json` lives).
pub const ENV_CONFIG_DIR: &str = "OASIS_ADMIN_CONFIG_DIR";
/// Forces a token store: `keyring`, `keyutils` or `memory`.
pub const ENV_TOKEN_STORE: &str = "OASIS_ADMIN_TOKEN_STORE";

/// Why the app or one of its commands failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tauri(#[from] tauri::Error),
    #[error("the box list {path} cannot be used: {message}")]
    BoxFile { path: PathBuf, message: String },
    #[error("at most {max} boxes can be added; remove one first")]
    TooManyBoxes { max: usize },
    #[error("no box with id `{id}` (it may have been removed)")]
    UnknownBox { id: String },
    #[error(transparent)]
    Client(#[from] oasis_client::Error),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{ENV_TOKEN_STORE}=`{value}` is not a token store (keyring, keyutils or memory)")]
    BadTokenStore { value: String },
}

/// Where the app keeps its state; by default the platform's config directory and the
/// first token store that works.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Folder of `boxes.json`; `None` for the app's config directory.
    pub config_dir: Option<PathBuf>,
    /// Token store to use; `None` to detect one.
    pub token_store: Option<TokenStoreKind>,
}

impl Settings {
    /// From `OASIS_ADMIN_CONFIG_DIR` and `OASIS_ADMIN_TOKEN_STORE`, when set.
    pub fn from_env() -> Result<Settings, Error> {
        let config_dir = std::env::var_os(ENV_CONFIG_DIR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let token_store = match std::env::var(ENV_TOKEN_STORE) {
            Ok(v) if !v.is_empty() => {
                Some(TokenStoreKind::parse(&v).ok_or(Error::BadTokenStore { value: v })?)
            }
            _ => None,
        };
        Ok(Settings {
            config_dir,
            token_store,
        })
    }
}

/// The app's configuration (`tauri.conf.json`, capabilities, the bundled front end).
pub fn context<R: Runtime>() -> tauri::Context<R> {
    tauri::generate_context!()
}

/// Builds the app on `builder` (`tauri::Builder::default()` for the real window,
/// `tauri::test::mock_builder()` in tests): its commands and its state.
pub fn run_app<R: Runtime>(builder: Builder<R>, settings: Settings) -> Result<App<R>, Error> {
    let app = builder
        .invoke_handler(tauri::generate_handler![
            commands::boxes_list,
            commands::box_probe,
            commands::box_pair,
            commands::box_remove,
            commands::api_request,
        ])
        .build(context())?;
    let config_dir = match settings.config_dir {
        Some(dir) => dir,
        None => app.path().app_config_dir()?,
    };
    let tokens = settings
        .token_store
        .map_or_else(TokenStore::detect, TokenStore::new);
    app.manage(AppState::open(&config_dir, tokens)?);
    Ok(app)
}
