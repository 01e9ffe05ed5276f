//! The `ganglion` command: serve, generate-config, check-config, rotate-key, register-user.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ganglion::config::{Config, example_config};

#[derive(Parser)]
#[command(
    name = "ganglion",
    version,
    about = "A Matrix homeserver for organisations that run their own nodes"
)]
struct Cli {
    /// TOML configuration file (defaults apply when omitted).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (the default).
    Serve,
    /// Print a complete, commented example configuration.
    GenerateConfig {
        /// The Matrix server name to put in the example.
        #[arg(long)]
        server_name: String,
    },
    /// Validate the configuration and exit.
    CheckConfig,
    /// Replace the server's signing key with a new one. The old public key is kept (published
    /// as `old_verify_keys`) so what it signed still verifies. Restart the server afterwards.
    RotateKey,
    /// Create an account on the running server through its shared-secret registration
    /// (`[registration] shared_secret` must be set). The password is read from standard input.
    RegisterUser {
        /// The new user's localpart (`alice` for @alice:server_name).
        username: String,
        /// Make the account a server admin (e.g. to read content reports).
        #[arg(long)]
        admin: bool,
    },
}

/// Reads the password (one line of standard input) and registers the account.
fn register_user(config: &Config, username: &str, admin: bool) -> std::process::ExitCode {
    use std::io::{BufRead, IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        eprint!("password for {username} (shown as typed): ");
        let _ = std::io::stderr().flush();
    }
    let mut password = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut password) {
        eprintln!("error: cannot read the password: {e}");
        return std::process::ExitCode::from(2);
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("error: empty password");
        return std::process::ExitCode::from(2);
    }
    ganglion_federation::tls::install_default_provider();
    let rt = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(ganglion::users::register::register_with_shared_secret(
        config, username, password, admin,
    )) {
        Ok(user_id) => {
            println!(
                "registered {user_id}{}",
                if admin { " (admin)" } else { "" }
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A tokio runtime from `builder`, or (having said why) the exit code.
fn runtime(
    mut builder: tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        std::process::ExitCode::FAILURE
    })
}

/// The configuration, or (having said why) the exit code for a bad one.
fn config_or_exit(path: Option<&PathBuf>) -> Result<Config, std::process::ExitCode> {
    load_config(path).map_err(|e| {
        eprintln!("error: {e}");
        std::process::ExitCode::from(2)
    })
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.0),
        None => Ok(Config::default()),
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::GenerateConfig { server_name }) => {
            print!("{}", example_config(&server_name));
            std::process::ExitCode::SUCCESS
        }
        Some(Command::CheckConfig) => match load_config(cli.config.as_ref()) {
            Ok(_) => {
                println!("configuration is valid");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::from(2)
            }
        },
        Some(Command::RotateKey) => {
            let config = match config_or_exit(cli.config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            match ganglion_federation::ServerSigningKey::rotate(
                &config.data_dir.join("signing.key"),
                &config.data_dir.join("old_signing_keys"),
                now,
            ) {
                Ok(k) => {
                    println!("new signing key {}; restart the server to use it", k.key_id);
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Some(Command::RegisterUser { username, admin }) => {
            let config = match config_or_exit(cli.config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            register_user(&config, &username, admin)
        }
        Some(Command::Serve) | None => {
            let config = match config_or_exit(cli.config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&config.logging.level);
            // One process-wide rustls provider (ring) for every TLS user.
            ganglion_federation::tls::install_default_provider();
            let rt = match runtime(tokio::runtime::Builder::new_multi_thread()) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match rt.block_on(ganglion::server::run(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("error: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

/// glibc raises its mmap threshold to the size of the largest block freed so far: after one
/// argon2 hash (19 MiB) every later allocation below that comes from heaps that are never given
/// back, and a server that handled a few logins sits on hundreds of MiB. A fixed threshold keeps
/// large blocks in mmap (returned on free) and lets the heap be trimmed.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called once, before any thread
    // other than main exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

fn init_logging(level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // ruma's auth checks log every decision at info, and its push-rule matching opens an
    // info span per JSON field of every event it looks at; keep both quiet unless asked for.
    let directives = format!("{level},ruma_state_res=warn,ruma_common=warn,sqlx=warn");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
