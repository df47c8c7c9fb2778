//! Reading the file: `${VAR}` substitution, strict parsing of both halves (Pingora's and ours),
//! the cross-field checks, and errors of the form `file:line: what is wrong`.

use super::schema::GatewayConf;
use crate::redis_link::mask_url_secrets;
use pingora::server::configuration::ServerConf;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The whole file, parsed and checked.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConf,
    pub gateway: GatewayConf,
}

/// A configuration error, printed as `file:line: message` (or `file: message` without a line).
/// Passwords in URLs are masked in the message (`redis://:****@host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
struct TopLevel {
    cosygate: GatewayConf,
}

/// Reads, substitutes and parses the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let err = |line: Option<usize>, message: String| ConfigError {
        file: file.clone(),
        line,
        message: mask_url_secrets(&message),
    };
    let raw = std::fs::read_to_string(path)
        .map_err(|e| err(None, format!("cannot read the configuration file: {e}")))?;
    let text =
        substitute_env(&raw, |name| std::env::var(name).ok()).map_err(|(line, m)| err(Some(line), m))?;
    let (server, gateway) = parse(&file, &text)?;
    check_tls_files(&text, &gateway).map_err(|(line, m)| err(line, m))?;
    Ok(Config {
        path: path.to_path_buf(),
        server,
        gateway,
    })
}

/// Every TLS listener's certificate and key must load and belong together (see `tls_check`);
/// the error points at the listener's `addr:` line. Not part of [`parse`]: it reads files.
fn check_tls_files(text: &str, gateway: &GatewayConf) -> Result<(), (Option<usize>, String)> {
    for listen in &gateway.listen.0 {
        let Some(tls) = &listen.tls else { continue };
        super::tls_check::check_pair(&tls.cert, &tls.key).map_err(|m| {
            let addr = listen.addr.to_string();
            let line = text
                .lines()
                .position(|l| {
                    let t = l.trim_start().trim_start_matches("- ").trim_start();
                    !t.starts_with('#') && t.starts_with("addr:") && t.contains(&addr)
                })
                .map(|i| i + 1)
                .or_else(|| line_of_key(text, "listen"));
            (line, format!("listen {addr}: {m}"))
        })?;
    }
    Ok(())
}

/// Parses already-substituted text; `file` is only used in errors.
pub fn parse(file: &str, text: &str) -> Result<(ServerConf, GatewayConf), ConfigError> {
    let yaml_err = |e: serde_yaml::Error| ConfigError {
        file: file.to_string(),
        line: e.location().map(|l| l.line()),
        message: mask_url_secrets(&without_string_values(&strip_location(&e.to_string()))),
    };
    let top: TopLevel = serde_yaml::from_str(text).map_err(yaml_err)?;
    let mut server: ServerConf = serde_yaml::from_str(text).map_err(yaml_err)?;
    server = server.validate().map_err(|e| ConfigError {
        file: file.to_string(),
        line: None,
        message: mask_url_secrets(&format!("invalid Pingora server setting: {e}")),
    })?;
    let gateway = top.cosygate;
    check_gateway(&gateway).map_err(|(key, message)| ConfigError {
        file: file.to_string(),
        line: line_of_key(text, key),
        message: mask_url_secrets(&message),
    })?;
    apply_server_defaults(text, &mut server, &gateway);
    Ok((server, gateway))
}

/// `grace_period_seconds` is the drain deadline of a shutdown or upgrade (see `drain`): unset,
/// it is the slowest request any pool allows, so no synthesis is cut; the drain ends as soon as
/// nothing is in flight, so an idle gateway still exits at once.
fn apply_server_defaults(text: &str, server: &mut ServerConf, gateway: &GatewayConf) {
    if line_of_key(text, "grace_period_seconds").is_none() {
        server.grace_period_seconds = Some(gateway.slowest_request().as_secs_f64().ceil() as u64);
    }
    if line_of_key(text, "graceful_shutdown_timeout_seconds").is_none() {
        server.graceful_shutdown_timeout_seconds = Some(10);
    }
}

/// Checks that involve more than one value. Returns the key to point at and the message.
fn check_gateway(g: &GatewayConf) -> Result<(), (&'static str, String)> {
    if let Some(admin) = &g.admin {
        admin.check(&g.listen.0).map_err(|e| ("admin", e))?;
    }
    match &g.default_pool {
        Some(name) if !g.pools.0.contains_key(name) => {
            return Err((
                "default_pool",
                format!(
                    "default_pool {name:?} is not one of the pools ({})",
                    g.pools.0.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        None if g.pools.0.len() > 1 => {
            return Err(("pools", "several pools are defined: set default_pool to the one that serves requests without an X-Cosygate-Pool header".into()));
        }
        _ => {}
    }
    if g.limits.max_text_chars == 0
        || g.limits.max_prompt_seconds.is_nan()
        || g.limits.max_prompt_seconds <= 0.0
        || g.limits.max_body.0 == 0
        || g.limits.header_timeout.0.is_zero()
        || g.limits.body_timeout.0.is_zero()
        || g.limits.max_header_bytes.0 == 0
        || g.limits.max_headers == 0
        || g.limits.max_connections_per_ip == 0
        || g.limits.max_connections_per_proxy == 0
        || g.limits.max_bodies_in_flight.0 == 0
    {
        return Err(("limits", "limits must all be greater than zero".into()));
    }
    if g.limits.max_bodies_in_flight.0 < g.limits.max_body.0 {
        return Err((
            "max_bodies_in_flight",
            "limits.max_bodies_in_flight must be at least limits.max_body, or no largest body could ever be read".into(),
        ));
    }
    if let Some(rl) = &g.rate_limit {
        for (key, b) in std::iter::once(("per_ip", &rl.per_ip)).chain(
            g.auth
                .iter()
                .flat_map(|a| a.tokens.iter())
                .filter_map(|t| t.rate_limit.as_ref().map(|b| ("rate_limit", b))),
        ) {
            if b.capacity == 0 || b.refill == 0 || b.per.0.is_zero() {
                return Err((
                    key,
                    "a rate-limit bucket needs capacity, refill and per greater than zero".into(),
                ));
            }
        }
        if rl.store == super::schema::RateLimitStore::Redis && rl.redis.is_none() {
            return Err((
                "store",
                "rate_limit.store is redis: set rate_limit.redis.url".into(),
            ));
        }
    }
    if let Some(auth) = &g.auth {
        let mut names = std::collections::HashSet::new();
        for t in &auth.tokens {
            if !names.insert(&t.name) {
                return Err(("name", format!("token name {:?} is used twice", t.name)));
            }
            if let Some(p) = t.pools.iter().flatten().find(|p| !g.pools.0.contains_key(*p)) {
                return Err((
                    "pools",
                    format!("token {:?} names pool {p:?}, which does not exist", t.name),
                ));
            }
        }
        if !auth.allow_anonymous && auth.tokens.is_empty() {
            return Err((
                "allow_anonymous",
                "allow_anonymous is false but no tokens are defined: nobody could call".into(),
            ));
        }
    }
    if g.jobs.max == 0 || g.jobs.max_bytes.0 == 0 || g.jobs.max_unfinished_per_caller == 0 {
        return Err((
            "jobs",
            "jobs.max, jobs.max_bytes and jobs.max_unfinished_per_caller must be greater than zero".into(),
        ));
    }
    if let Some(v) = &g.voices {
        if v.dir(g.cache.as_ref()).is_none() {
            return Err((
                "voices",
                "voices needs a directory: set voices.path (or configure cache.disk, whose \
                 <path>/voices is the default)"
                    .into(),
            ));
        }
        let tokens = g.auth.as_ref().is_some_and(|a| !a.tokens.is_empty());
        if !v.allow_anonymous && !tokens {
            return Err((
                "voices",
                "voices.allow_anonymous is false and there are no auth.tokens: nobody could use \
                 voices; add tokens, or set voices.allow_anonymous: true"
                    .into(),
            ));
        }
        if v.max_per_tenant == 0 || v.max_bytes_per_tenant.0 == 0 || v.memory.0 == 0 {
            return Err((
                "voices",
                "voices.max_per_tenant, max_bytes_per_tenant and memory must be greater than zero".into(),
            ));
        }
    }
    if let Some(f) = &g.fallback {
        crate::backend::fallback::check_command(&f.command.0).map_err(|e| ("command", e))?;
    }
    let redis_urls = [
        (
            "rate_limit.redis",
            g.rate_limit
                .as_ref()
                .and_then(|r| r.redis.as_ref())
                .map(|r| &r.url),
        ),
        (
            "cache.redis",
            g.cache.as_ref().and_then(|c| c.redis.as_ref()).map(|r| &r.url),
        ),
        ("supervisor.redis", g.supervisor.redis.as_ref().map(|r| &r.url)),
    ];
    for (section, url) in redis_urls {
        if let Some(Err(e)) = url.map(|u| redis::Client::open(u.expose())) {
            // The URL is not quoted: a malformed one may not even show where its password is.
            return Err((
                "redis",
                format!(
                    "{section}.url is not a valid Redis URL ({e}); write it as redis://[:PASSWORD@]HOST:PORT/DB"
                ),
            ));
        }
    }
    for (name, pool) in &g.pools.0 {
        if pool.protocol != crate::config::Protocol::Triton
            && (pool.transport != crate::config::TritonTransport::Http || pool.model_name != "cosyvoice3")
        {
            return Err((
                "transport",
                format!("pool {name}: transport and model_name apply only to protocol: triton"),
            ));
        }
        if pool.protocol == crate::config::Protocol::Triton
            && (pool.model_name.is_empty()
                || !pool
                    .model_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
        {
            return Err((
                "model_name",
                format!("pool {name}: model_name may only contain letters, digits, '_', '-' and '.'"),
            ));
        }
        if !pool.health_path().starts_with('/') {
            return Err(("path", format!("pool {name}: health.path must start with '/'")));
        }
        if pool.health.healthy_after == 0 || pool.health.unhealthy_after == 0 {
            return Err((
                "health",
                format!("pool {name}: healthy_after and unhealthy_after must be at least 1"),
            ));
        }
        if pool.sample_rate < 8000 {
            return Err((
                "sample_rate",
                format!("pool {name}: sample_rate {} is too low", pool.sample_rate),
            ));
        }
        if !(pool.max_audio_seconds.is_finite()
            && pool.max_audio_seconds > 0.0
            && pool.max_audio_seconds <= 3600.0)
        {
            return Err((
                "max_audio_seconds",
                format!("pool {name}: max_audio_seconds must be above 0 and at most 3600"),
            ));
        }
        if pool
            .speakers
            .as_ref()
            .is_some_and(|s| s.iter().any(|n| n.trim().is_empty()))
        {
            return Err(("speakers", format!("pool {name}: a speaker name is empty")));
        }
        if pool.deadline.is_some_and(|d| d.0.is_zero()) {
            return Err(("deadline", format!("pool {name}: deadline must be above 0")));
        }
        let r = &pool.retry;
        if !(r.budget_ratio.is_finite() && (0.0..=10.0).contains(&r.budget_ratio))
            || r.budget_window.0.is_zero()
        {
            return Err((
                "retry",
                format!("pool {name}: retry.budget_ratio must be between 0 and 10, and retry.budget_window above 0"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = pool.backends.0.iter().find(|b| !seen.insert(b.addr)) {
            return Err((
                "backends",
                format!("pool {name}: backend {} is listed twice", dup.addr),
            ));
        }
    }
    Ok(())
}

/// Replaces `${NAME}` with the variable's value; an unset variable is an error on its line.
/// Comment lines are left alone.
pub fn substitute_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or((i + 1, "unterminated ${: write ${NAME}".to_string()))?;
            let name = &after[..end];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err((
                    i + 1,
                    format!("${{{name}}} is not a valid environment variable name"),
                ));
            }
            let value = lookup(name).ok_or((
                i + 1,
                format!("environment variable {name} is not set (used as ${{{name}}})"),
            ))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// serde_yaml appends " at line L column C"; we print the line in front instead.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Drops the quoted value from serde's `invalid type: string "..."` (and `invalid value`):
/// the line number already points at it, and a mis-indented file can turn whole sections,
/// Redis passwords included, into one long string that would otherwise be printed.
fn without_string_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("string \"") {
        out.push_str(&rest[..i]);
        out.push_str("a string");
        let value = &rest[i + "string \"".len()..];
        // serde prints the value with Rust's escapes: skip to the first unescaped quote.
        let mut escaped = false;
        let end = value
            .char_indices()
            .find(|&(_, c)| {
                let close = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                close
            })
            .map_or(value.len(), |(j, _)| j + 1);
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// The 1-based line where `key:` first appears (outside comments), for cross-field errors.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            !t.starts_with('#')
                && t.strip_prefix(key)
                    .is_some_and(|r| r.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
