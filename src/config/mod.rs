//! Configuration: one YAML file, read once at start and handed down as plain structs.
//!
//! Pingora's own server keys (`threads`, `pid_file`, `upgrade_sock`, ...) stay at the top level
//! and go to Pingora's `ServerConf`; everything of ours lives under `cosygate:` ([`GatewayConf`]).
//! `${VAR}` is replaced by the environment variable VAR before parsing. Every error names the file
//! and line: `conf/cosygate.yaml:12: unknown field ...`.

mod load;
pub mod schema;
mod tls_check;
pub mod units;

pub use load::{load, parse, substitute_env, Config, ConfigError};
pub use schema::*;
pub use tls_check::check_pair as check_tls_pair;
pub use units::{ByteSize, ConfDuration};
