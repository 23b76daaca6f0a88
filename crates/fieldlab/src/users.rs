//! `fieldlab users ...`: manage who may use the API and the embedded broker.
//!
//! Works on `<data_dir>/auth/users.json` directly, so it also works while `fieldlab up` runs
//! (the server re-reads the file when it changes: a revoked user is refused at the next
//! request). The first admin is made here — fieldlab has no default user or password.

use clap::{Args, Subcommand};
use fieldlab_auth::users::MIN_PASSWORD_LEN;
use fieldlab_auth::UserDb;
use fieldlab_core::Role;
use fieldlab_topology::config::Config;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct UsersArgs {
    /// fieldlab.yaml whose storage.data_dir holds the users (default ./data).
    #[arg(long, env = "FIELDLAB_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory (wins over the config file).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: UsersCmd,
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Add a user. The password is asked on the terminal, or read as one line from stdin when
    /// stdin is not a terminal (`echo "$PW" | fieldlab users add ...`).
    Add {
        name: String,
        /// admin | operator | viewer | teacher | student (repeat for several).
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<Role>,
        /// Read the password from the first line of stdin even when stdin is a terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users and API keys (never secrets).
    List,
    /// Set a new password (also re-enables a revoked user); the user's tokens stop working.
    /// Read from stdin as for `add` when stdin is not a terminal.
    Passwd {
        name: String,
        /// Read the password from the first line of stdin even when stdin is a terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Revoke a user: password and tokens stop working at once.
    Revoke { name: String },
    /// API keys for devices and scripts.
    #[command(subcommand)]
    Key(KeyCmd),
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Make a key and print it once. For a device, NAME is its device id (and MQTT client id).
    Add {
        name: String,
        /// Roles of the key (default: device).
        #[arg(long = "role", value_parser = parse_role)]
        roles: Vec<Role>,
    },
    /// List keys.
    List,
    /// Revoke a key by id or by name (all of that name's keys).
    Revoke { id_or_name: String },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
        let all: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("`{s}` is not a role; use one of: {}", all.join(", "))
    })
}

fn read_password(from_stdin: bool, what: &str) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let pw = line.trim_end_matches(['\r', '\n']).to_string();
        if pw.is_empty() {
            anyhow::bail!(
                "no password on stdin: pipe it in as one line (echo \"$PW\" | fieldlab users ...), or run in a terminal to be asked"
            );
        }
        return Ok(pw);
    }
    let p =
        rpassword::prompt_password(format!("{what} (at least {MIN_PASSWORD_LEN} characters): "))?;
    let again = rpassword::prompt_password("again: ")?;
    if p != again {
        anyhow::bail!("the two passwords differ; nothing changed");
    }
    Ok(p)
}

fn roles_text(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn run(a: UsersArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(
        a.config.as_deref(),
        |k| std::env::var(k).ok(),
        std::env::vars(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let data_dir = a.data_dir.unwrap_or(cfg.storage.data_dir);
    let db = UserDb::open(&data_dir);
    let err = |e: fieldlab_auth::AuthError| anyhow::anyhow!("{e}");
    match a.cmd {
        UsersCmd::Add {
            name,
            roles,
            password_stdin,
        } => {
            let pw = read_password(password_stdin, &format!("password for {name}"))?;
            db.update(|f| f.add_user(&name, &roles, &pw)).map_err(err)?;
            println!(
                "added user {name} ({}) in {}",
                roles_text(&roles),
                db.path().display()
            );
            if !cfg.auth.enabled {
                println!("note: auth.enabled is false in this config; set it (or AUTH_ENABLED=true) for users to matter");
            }
        }
        UsersCmd::List => {
            let f = db.current().map_err(err)?;
            if f.users.is_empty() && f.keys.is_empty() {
                println!(
                    "no users yet; add the first admin with `fieldlab users add NAME --role admin`"
                );
            }
            for u in &f.users {
                let state = if u.revoked { "revoked" } else { "active" };
                println!(
                    "user {:<24} {:<20} {state:<8} created {}",
                    u.name,
                    roles_text(&u.roles),
                    u.created
                );
            }
            for k in &f.keys {
                print_key(k);
            }
        }
        UsersCmd::Passwd {
            name,
            password_stdin,
        } => {
            let pw = read_password(password_stdin, &format!("new password for {name}"))?;
            db.update(|f| f.set_password(&name, &pw)).map_err(err)?;
            println!("password of {name} changed; its earlier tokens no longer work");
        }
        UsersCmd::Revoke { name } => {
            db.update(|f| f.revoke_user(&name)).map_err(err)?;
            println!("revoked {name}: its password and tokens no longer work");
        }
        UsersCmd::Key(KeyCmd::Add { name, roles }) => {
            let roles = if roles.is_empty() {
                vec![Role::Device]
            } else {
                roles
            };
            let k = db.update(|f| f.add_key(&name, &roles)).map_err(err)?;
            eprintln!(
                "API key for {name} ({}); shown once, store it now:",
                roles_text(&roles)
            );
            println!("{}", k.secret);
            eprintln!("HTTP: `Authorization: Bearer <key>` or `X-API-Key: <key>`; MQTT: user name {name}, password <key>");
        }
        UsersCmd::Key(KeyCmd::List) => {
            for k in &db.current().map_err(err)?.keys {
                print_key(k);
            }
        }
        UsersCmd::Key(KeyCmd::Revoke { id_or_name }) => {
            let n = db.update(|f| f.revoke_key(&id_or_name)).map_err(err)?;
            println!("revoked {n} key(s)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_key(k: &fieldlab_auth::users::ApiKey) {
    let state = if k.revoked { "revoked" } else { "active" };
    println!(
        "key  {:<24} {:<20} {state:<8} created {}  id {}",
        k.name,
        roles_text(&k.roles),
        k.created,
        k.id
    );
}
