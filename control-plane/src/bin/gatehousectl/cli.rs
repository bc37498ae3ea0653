//! The command line: global connection flags, then one subcommand per public RPC.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "gatehousectl",
    version,
    about = "Command-line client of the Gatehouse control plane's public gRPC APIs",
    long_about = "Command-line client of the Gatehouse control plane's public gRPC APIs \
                  (Authentication, Session, Personal).\n\nExit codes: 0 success, 1 the call \
                  failed (the gRPC status is printed), 64 bad usage or unreadable certificate \
                  files."
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Human, env = "GATEHOUSE_OUTPUT")]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned text for people.
    Human,
    /// One JSON document on stdout (proto field names, RFC 3339 timestamps).
    Json,
}

#[derive(Debug, Args)]
pub struct Connection {
    /// Control-plane address: `http://host:port`, `https://host:port`, or `host:port` (https
    /// when --ca is given, http otherwise).
    #[arg(
        long,
        short,
        global = true,
        env = "GATEHOUSE_ENDPOINT",
        default_value = "http://127.0.0.1:4243"
    )]
    pub endpoint: String,
    /// CA certificate (PEM) that signed the control plane's certificate; needed for https.
    #[arg(long, global = true, env = "GATEHOUSE_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; its name must be in `tls.roles.admin` for the
    /// Authentication and Session APIs.
    #[arg(long, global = true, env = "GATEHOUSE_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, global = true, env = "GATEHOUSE_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Name to verify the server certificate against (default: the endpoint's host).
    #[arg(long, global = true, env = "GATEHOUSE_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Deadline of each call, e.g. `10s`, `500ms`.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// AuthenticationService/RequestTicket: a one-time login ticket for a user.
    RequestTicket {
        #[command(flatten)]
        user: UserArgs,
        /// Prefix of the virtual proxy ("" is the default proxy).
        #[arg(long, short = 'p', default_value = "")]
        virtual_proxy: String,
        /// The `targetId` the data plane sent to the authentication module.
        #[arg(long)]
        target_id: Option<String>,
    },
    /// SessionService/CreateSession: a session for a user; prints its token.
    CreateSession {
        #[command(flatten)]
        user: UserArgs,
        /// Prefix of the virtual proxy ("" is the default proxy).
        #[arg(long, short = 'p', default_value = "")]
        virtual_proxy: String,
        /// A caller-chosen token (32 to 256 random-looking URL-safe characters); generated
        /// when absent.
        #[arg(long)]
        token: Option<String>,
    },
    /// SessionService/GetSession: one session, by handle or token.
    GetSession(SelectorArgs),
    /// SessionService/DeleteSession: ends a session, by handle or token.
    DeleteSession(SelectorArgs),
    /// SessionService/ListSessions: every live session, following every page unless
    /// --page-token or --single-page is given.
    ListSessions {
        /// Only this virtual proxy.
        #[arg(long, short = 'p')]
        virtual_proxy: Option<String>,
        /// Sessions per page (1 to 1000; 0 means the server's default, 100).
        #[arg(long, default_value_t = 0)]
        page_size: u32,
        /// Start at this page (`next_page_token` of an earlier call); fetches one page.
        #[arg(long)]
        page_token: Option<String>,
        /// Fetch only the first page and print its `next_page_token`.
        #[arg(long)]
        single_page: bool,
    },
    /// SessionService/ListUserSessions: a user's sessions.
    ListUserSessions(UserSessionsArgs),
    /// SessionService/DeleteUserSessions: logs a user out, of one virtual proxy or all.
    DeleteUserSessions(UserSessionsArgs),
    /// PersonalService/GetCurrentUser: the session a token belongs to.
    #[command(visible_alias = "get-current-user")]
    Whoami(PersonalArgs),
    /// PersonalService/Logout: ends the session a token belongs to.
    Logout(PersonalArgs),
    /// PersonalService/ListMySessions: where the token's user is logged in (in the token's
    /// virtual proxy), the token's own session marked.
    #[command(visible_alias = "list-my-sessions")]
    MySessions(PersonalArgs),
    /// PersonalService/EndMySession: ends one of the token's user's sessions, by handle.
    EndMySession {
        #[command(flatten)]
        personal: PersonalArgs,
        /// The session's handle, as `my-sessions` shows it.
        #[arg(long)]
        handle: String,
    },
}

#[derive(Debug, Args)]
pub struct UserArgs {
    /// User directory, e.g. CORP.
    #[arg(long, short = 'd', visible_alias = "user-directory")]
    pub directory: String,
    /// User id within the directory, e.g. alice.
    #[arg(long, short = 'u', visible_alias = "user-id")]
    pub user: String,
    /// An attribute `name=value` (repeatable: a user in two groups has two `group=...`).
    #[arg(long = "attribute", short = 'a', value_parser = parse_attribute)]
    pub attributes: Vec<(String, String)>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SelectorArgs {
    /// The session's public handle (as listings show it).
    #[arg(long)]
    pub handle: Option<String>,
    /// The session's token (the cookie value).
    #[arg(long)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct UserSessionsArgs {
    /// User directory, e.g. CORP.
    #[arg(long, short = 'd', visible_alias = "user-directory")]
    pub directory: String,
    /// User id within the directory, e.g. alice.
    #[arg(long, short = 'u', visible_alias = "user-id")]
    pub user: String,
    /// Only this virtual proxy; every virtual proxy when absent.
    #[arg(long, short = 'p')]
    pub virtual_proxy: Option<String>,
}

#[derive(Debug, Args)]
pub struct PersonalArgs {
    /// The caller's session token, sent as `authorization: Bearer <token>`. Prefer the
    /// environment variable: command lines are visible to other users of the machine.
    #[arg(long, env = "GATEHOUSE_SESSION_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The virtual proxy the token must belong to.
    #[arg(long, short = 'p')]
    pub virtual_proxy: Option<String>,
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not name=value")),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 10s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" | "" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number.saturating_mul(60))),
        _ => Err(format!("`{text}` is not a duration like 10s or 500ms")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_units_people_type() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn attributes_are_name_equals_value() {
        assert_eq!(
            parse_attribute("group=a=b"),
            Ok(("group".to_owned(), "a=b".to_owned()))
        );
        assert_eq!(
            parse_attribute("email="),
            Ok(("email".to_owned(), String::new()))
        );
        assert!(parse_attribute("group").is_err());
        assert!(parse_attribute("=x").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
