//! Who is asking, and what they may do (SPEC section 7).
//!
//! - A token file, given to `serve --token-file`, holds one line per token: its principal's name,
//!   its role, the SHA-256 of the token, and for agents the hosts it may act for. The tokens
//!   themselves are never stored: they are 256 random bits, so a plain SHA-256 cannot be reversed
//!   or guessed, and a stolen file grants nothing.
//! - [`ACCESS_RULES`] is the one table of which role may call which endpoint; the router's
//!   middleware and the stream listener both consult it, and docs/security.md shows it.
//! - Without a token file the server runs open: every caller is the admin `anonymous`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use sha2::{Digest, Sha256};

use fleetlog_raft::consensus::peer::client::constant_time_equal;
use fleetlog_raft::domain::ledger::validate;

use crate::error::{ApiError, ApiResult};

/// Prefix of every token this server issues, so a token is recognisable in a config or a leak scan.
const TOKEN_PREFIX: &str = "flt_";
/// Random bytes in a token.
const TOKEN_RANDOM_BYTES: usize = 32;
/// Characters of a principal's name or a host's.
const NAME_CHARS_MAX: usize = fleetlog_raft::domain::limits::NAME_CHARS_MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Everything, cluster membership included.
    Admin,
    /// Appends, every domain command, reads.
    Deployer,
    /// Registers, reports for and watches only the hosts its token names.
    Agent,
    /// Reads only.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Deployer, Role::Agent, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Agent => "agent",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

/// What an endpoint needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Anyone, without a token: liveness and readiness probes.
    Public,
    /// Raft traffic between nodes: authenticated by the cluster secret, not by a token.
    Peer,
    /// Any reader: admin, deployer, auditor.
    Read,
    /// A stream or view of one host named in the path: readers, and agents for their hosts.
    HostRead,
    /// Writes a host names in its body or path: admin, deployer, and agents for their hosts (the
    /// handler checks the host, since it may only be known from the body).
    HostWrite,
    /// Appends and domain commands: admin, deployer.
    Write,
    /// Cluster membership: admin.
    Membership,
    /// Webhooks, which send the log outside the cluster (and whose URLs may hold credentials):
    /// admin.
    Admin,
}

impl Permission {
    /// Whether `role` may call an endpoint needing this (for agents, host checks come on top).
    pub fn allows(self, role: Role) -> bool {
        match self {
            Permission::Public => true,
            Permission::Peer => false,
            Permission::Read => role != Role::Agent,
            Permission::HostRead => true,
            Permission::HostWrite => role != Role::Auditor,
            Permission::Write => matches!(role, Role::Admin | Role::Deployer),
            Permission::Membership | Permission::Admin => role == Role::Admin,
        }
    }
}

/// Every endpoint with what it needs. A route of the router that is missing here is refused
/// (a test checks that none is).
pub const ACCESS_RULES: &[(&str, &str, Permission)] = &[
    ("GET", "/", Permission::Public),
    ("GET", "/healthz", Permission::Public),
    ("GET", "/readyz", Permission::Public),
    ("GET", "/metrics", Permission::Read),
    // The document describes the API, not the ledger: a client needs it before it has a token.
    ("GET", "/v1/openapi.json", Permission::Public),
    ("POST", "/v1/events", Permission::Write),
    ("GET", "/v1/events", Permission::Read),
    ("GET", "/v1/events/{seq}", Permission::Read),
    ("GET", "/v1/streams/{*stream}", Permission::Read),
    ("GET", "/v1/subscribe", Permission::Read),
    ("GET", "/v1/watch/{host}", Permission::HostRead),
    ("GET", "/v1/fleet", Permission::Read),
    ("GET", "/v1/fleet/diff", Permission::Read),
    ("GET", "/v1/checkpoint", Permission::Read),
    ("GET", "/v1/checkpoint/key", Permission::Read),
    ("GET", "/v1/proofs/inclusion", Permission::Read),
    ("GET", "/v1/proofs/consistency", Permission::Read),
    ("GET", "/v1/export", Permission::Read),
    ("GET", "/v1/hosts/{host}", Permission::HostRead),
    ("POST", "/v1/deployments", Permission::Write),
    ("GET", "/v1/deployments", Permission::Read),
    ("GET", "/v1/deployments/{id}", Permission::Read),
    ("POST", "/v1/deployments/{id}/waves/{wave}/start", Permission::Write),
    ("POST", "/v1/deployments/{id}/waves/{wave}/complete", Permission::Write),
    ("POST", "/v1/deployments/{id}/complete", Permission::Write),
    ("POST", "/v1/deployments/{id}/abort", Permission::Write),
    ("POST", "/v1/deployments/{id}/halt", Permission::Write),
    ("POST", "/v1/deployments/{id}/resume", Permission::Write),
    ("GET", "/v1/deployments/{id}/decisions", Permission::Read),
    ("GET", "/v1/policies/{service}/{env}", Permission::Read),
    ("PUT", "/v1/policies/{service}/{env}", Permission::Write),
    ("GET", "/v1/calendars", Permission::Read),
    ("PUT", "/v1/calendars", Permission::Write),
    ("GET", "/v1/dora", Permission::Read),
    ("GET", "/v1/alerts", Permission::Read),
    ("POST", "/v1/alerts/alertmanager", Permission::Write),
    ("POST", "/v1/cdevents", Permission::Write),
    ("POST", "/v1/releases", Permission::Write),
    ("GET", "/v1/services/{service}/releases", Permission::Read),
    ("POST", "/v1/services/{service}/releases/{release}/block", Permission::Write),
    ("POST", "/v1/services/{service}/releases/{release}/unblock", Permission::Write),
    ("POST", "/v1/rollbacks", Permission::Write),
    ("POST", "/v1/targets", Permission::HostWrite),
    ("DELETE", "/v1/targets/{service}/{env}/{host}", Permission::HostWrite),
    ("POST", "/v1/reports", Permission::HostWrite),
    ("POST", "/v1/freezes", Permission::Write),
    ("DELETE", "/v1/freezes/{service}/{env}", Permission::Write),
    ("POST", "/v1/webhooks", Permission::Admin),
    ("GET", "/v1/webhooks", Permission::Admin),
    ("DELETE", "/v1/webhooks/{id}", Permission::Admin),
    ("GET", "/v1/whoami", Permission::Read),
    ("GET", "/v1/cluster", Permission::Read),
    ("POST", "/v1/cluster/init", Permission::Membership),
    ("POST", "/v1/cluster/learners", Permission::Membership),
    ("PUT", "/v1/cluster/members", Permission::Membership),
    ("DELETE", "/v1/cluster/members/{id}", Permission::Membership),
    ("POST", "/v1/cluster/members/{id}/promote", Permission::Membership),
];

/// The rule of a routed endpoint, by method and route template. Peer routes are not listed:
/// the caller knows them by their prefix.
pub fn permission(method: &Method, template: &str) -> Option<Permission> {
    ACCESS_RULES
        .iter()
        .find(|(rule_method, rule_path, _)| *rule_method == method.as_str() && *rule_path == template)
        .map(|(_, _, permission)| *permission)
}

/// The caller of a request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// The hosts an agent token names; empty for other roles.
    hosts: Arc<BTreeSet<String>>,
}

impl Principal {
    /// The caller of a server that runs without tokens.
    pub fn anonymous() -> Principal {
        Principal { name: "anonymous".to_string(), role: Role::Admin, hosts: Arc::default() }
    }

    /// Whether this caller may act for `host` (only agents are limited to hosts).
    pub fn may_act_for(&self, host: &str) -> bool {
        self.role != Role::Agent || self.hosts.contains(host)
    }

    /// Refuses with 403 unless the role may call an endpoint needing `permission`.
    pub fn require(&self, permission: Permission) -> ApiResult<()> {
        if permission.allows(self.role) {
            return Ok(());
        }
        Err(forbidden(format!("the {} role may not call this endpoint", self.role.as_str())))
    }

    /// Refuses with 403 unless this caller may act for `host`.
    pub fn require_host(&self, host: &str) -> ApiResult<()> {
        if self.may_act_for(host) {
            return Ok(());
        }
        Err(forbidden(format!("the token of {:?} does not name host {host:?}", self.name)))
    }

    /// Both checks, for endpoints whose path names a host.
    pub fn require_for_host(&self, permission: Permission, host: &str) -> ApiResult<()> {
        self.require(permission)?;
        if matches!(permission, Permission::HostRead | Permission::HostWrite) {
            self.require_host(host)?;
        }
        Ok(())
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

fn unauthenticated(code: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// One line of the token file.
#[derive(Clone, Debug)]
struct TokenEntry {
    hash: [u8; 32],
    principal: Principal,
    /// Microseconds since the epoch after which the token is refused.
    expires_micros: Option<i64>,
}

/// The tokens a server accepts.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the token file {}: {error}", path.display()))?;
        Tokens::parse(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Parses a token file: `NAME ROLE sha256:HEX [hosts=A,B] [expires=RFC3339]` per line;
    /// blank lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = parse_line(line).map_err(|error| format!("line {}: {error}", index + 1))?;
            if entries.iter().any(|known| known.principal.name == entry.principal.name) {
                return Err(format!("line {}: the name {:?} is used twice", index + 1, entry.principal.name));
            }
            if entries.iter().any(|known| known.hash == entry.hash) {
                return Err(format!("line {}: the same token hash is listed twice", index + 1));
            }
            entries.push(entry);
        }
        Ok(Tokens { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of an `Authorization` header's value, or 401.
    pub fn authenticate(&self, authorization: Option<&[u8]>, now_micros: i64) -> ApiResult<Principal> {
        let Some(value) = authorization else {
            return Err(unauthenticated("unauthenticated", "this server needs a token: Authorization: Bearer TOKEN"));
        };
        let token = std::str::from_utf8(value)
            .ok()
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| unauthenticated("unauthenticated", "the Authorization header must be Bearer TOKEN"))?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, in constant time each, so timing tells nothing about which
        // entry (if any) came close.
        let mut found = None;
        for entry in &self.entries {
            if constant_time_equal(&entry.hash, &presented) {
                found = Some(entry);
            }
        }
        let entry = found.ok_or_else(|| unauthenticated("invalid_token", "this token is not known to the server"))?;
        if entry.expires_micros.is_some_and(|expires| now_micros >= expires) {
            return Err(unauthenticated("token_expired", "this token has expired"));
        }
        Ok(entry.principal.clone())
    }
}

fn parse_line(line: &str) -> Result<TokenEntry, String> {
    let mut fields = line.split_whitespace();
    let (Some(name), Some(role), Some(hash)) = (fields.next(), fields.next(), fields.next()) else {
        return Err("expected NAME ROLE sha256:HEX [hosts=A,B] [expires=TIME]".to_string());
    };
    check_name("name", name, validate::is_token_name_char)?;
    let role = Role::parse(role).ok_or_else(|| format!("unknown role {role:?} (admin, deployer, agent, auditor)"))?;
    let hash = hash
        .strip_prefix("sha256:")
        .and_then(|hex_text| hex::decode(hex_text).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| "the third field must be sha256: and 64 hex digits".to_string())?;
    let mut hosts = BTreeSet::new();
    let mut expires_micros = None;
    for field in fields {
        if let Some(list) = field.strip_prefix("hosts=") {
            for host in list.split(',') {
                check_name("host", host, validate::is_name_char)?;
                hosts.insert(host.to_string());
            }
        } else if let Some(time) = field.strip_prefix("expires=") {
            let time = chrono::DateTime::parse_from_rfc3339(time)
                .map_err(|error| format!("expires={time:?} is not an RFC 3339 time: {error}"))?;
            expires_micros = Some(time.timestamp_micros());
        } else {
            return Err(format!("unknown field {field:?}"));
        }
    }
    match (role, hosts.is_empty()) {
        (Role::Agent, true) => return Err("an agent token must name its hosts (hosts=A,B)".to_string()),
        (Role::Agent, false) => {}
        (_, false) => return Err("only agent tokens name hosts".to_string()),
        (_, true) => {}
    }
    Ok(TokenEntry {
        hash,
        principal: Principal { name: name.to_string(), role, hosts: Arc::new(hosts) },
        expires_micros,
    })
}

/// Names follow the ledger's own rules, so a principal can always be an event's actor and an
/// agent's hosts are hosts the ledger accepts.
fn check_name(what: &str, name: &str, allowed: fn(char) -> bool) -> Result<(), String> {
    validate::check_name(what, name, NAME_CHARS_MAX, allowed).map_err(|rejection| rejection.message)
}

/// A new token and the token-file line that accepts it.
pub struct NewToken {
    pub token: String,
    pub line: String,
}

/// Makes a token for `name` with `role`; agents must name hosts, others must not.
pub fn create_token(name: &str, role: Role, hosts: &[String], expires: Option<&str>) -> Result<NewToken, String> {
    use rand::RngCore;
    // Checked before the line is put together: a space in a name would shift the fields.
    check_name("name", name, validate::is_token_name_char)?;
    for host in hosts {
        check_name("host", host, validate::is_name_char)?;
    }
    if expires.is_some_and(|expires| expires.contains(char::is_whitespace)) {
        return Err("--expires must be an RFC 3339 time without spaces".to_string());
    }
    let mut random = [0u8; TOKEN_RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(random));
    let mut line = format!("{name} {} sha256:{}", role.as_str(), hex::encode(Sha256::digest(token.as_bytes())));
    if !hosts.is_empty() {
        line.push_str(&format!(" hosts={}", hosts.join(",")));
    }
    if let Some(expires) = expires {
        line.push_str(&format!(" expires={expires}"));
    }
    // The line goes through the same parser the server uses, so what is printed is accepted.
    parse_line(&line)?;
    Ok(NewToken { token, line })
}

/// The role x endpoint table of docs/security.md, made from [`ACCESS_RULES`].
pub fn role_matrix_markdown() -> String {
    let mut table = String::from("| endpoint | admin | deployer | agent | auditor |\n|---|---|---|---|---|\n");
    for (method, path, permission) in ACCESS_RULES {
        let mut row = format!("| `{method} {path}` |");
        for role in Role::ALL {
            let cell = match (permission.allows(role), role, permission) {
                (_, _, Permission::Public) => "yes, no token needed",
                (true, Role::Agent, _) => "its hosts only",
                (true, _, _) => "yes",
                (false, _, _) => "no",
            };
            row.push_str(&format!(" {cell} |"));
        }
        table.push_str(&row);
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        chrono::Utc::now().timestamp_micros()
    }

    #[test]
    fn a_created_token_authenticates_as_its_principal_and_nothing_else_does() {
        let hosts = vec!["web-1".to_string(), "web-2".to_string()];
        let created = create_token("web-agents", Role::Agent, &hosts, None).unwrap();
        assert!(created.token.starts_with(TOKEN_PREFIX));
        assert!(!created.line.contains(&created.token), "the file line must not hold the token itself");
        let tokens = Tokens::parse(&format!("# comment\n\n{}\n", created.line)).unwrap();
        let header = format!("Bearer {}", created.token);
        let principal = tokens.authenticate(Some(header.as_bytes()), now()).unwrap();
        assert_eq!(principal.name, "web-agents");
        assert_eq!(principal.role, Role::Agent);
        assert!(principal.may_act_for("web-2"));
        assert!(!principal.may_act_for("db-1"));

        let mut altered = created.token.clone();
        altered.pop();
        altered.push('x');
        for (header, code) in [
            (None, "unauthenticated"),
            (Some(created.token.clone()), "unauthenticated"),
            (Some("Bearer ".to_string()), "unauthenticated"),
            (Some(format!("Bearer {altered}")), "invalid_token"),
            (Some("Basic dXNlcjpwYXNz".to_string()), "unauthenticated"),
        ] {
            let error = tokens.authenticate(header.as_deref().map(str::as_bytes), now()).unwrap_err();
            assert_eq!((error.status, error.code.as_str()), (StatusCode::UNAUTHORIZED, code), "{header:?}");
        }
    }

    #[test]
    fn an_expired_token_is_refused() {
        let created = create_token("old", Role::Auditor, &[], Some("2020-01-01T00:00:00Z")).unwrap();
        let tokens = Tokens::parse(&created.line).unwrap();
        let header = format!("Bearer {}", created.token);
        let error = tokens.authenticate(Some(header.as_bytes()), now()).unwrap_err();
        assert_eq!(error.code, "token_expired");
        let before = chrono::DateTime::parse_from_rfc3339("2019-12-31T23:59:59Z").unwrap().timestamp_micros();
        assert_eq!(tokens.authenticate(Some(header.as_bytes()), before).unwrap().name, "old");
    }

    #[test]
    fn bad_token_files_are_refused_with_their_line() {
        let hash = format!("sha256:{}", "ab".repeat(32));
        for (text, expected) in [
            ("alice".to_string(), "line 1: expected NAME"),
            (format!("alice root {hash}"), "unknown role"),
            ("alice admin sha256:abc".to_string(), "64 hex digits"),
            (format!("alice admin {hash} hosts=web-1"), "only agent tokens name hosts"),
            (format!("agent-1 agent {hash}"), "must name its hosts"),
            (format!("alice admin {hash} expires=tomorrow"), "RFC 3339"),
            (format!("alice admin {hash} colour=blue"), "unknown field"),
            (format!("al ice admin {hash}"), "unknown role"),
            (format!("svc:ci deployer {hash}"), "name"),
            (format!("web agent {hash} hosts=web@1"), "host"),
            (format!("# first\nalice admin {hash}\nalice auditor sha256:{}", "cd".repeat(32)), "line 3: the name"),
            (format!("alice admin {hash}\nbob auditor {hash}"), "line 2: the same token hash"),
        ] {
            let error = Tokens::parse(&text).unwrap_err();
            assert!(error.contains(expected), "{text:?} gave {error:?}");
        }
    }

    #[test]
    fn roles_get_what_section_7_gives_them() {
        use Permission::*;
        let allowed = |role: Role| -> Vec<Permission> {
            [Public, Peer, Read, HostRead, HostWrite, Write, Membership, Admin]
                .into_iter()
                .filter(|permission| permission.allows(role))
                .collect()
        };
        assert_eq!(allowed(Role::Admin), vec![Public, Read, HostRead, HostWrite, Write, Membership, Admin]);
        assert_eq!(allowed(Role::Deployer), vec![Public, Read, HostRead, HostWrite, Write]);
        assert_eq!(allowed(Role::Agent), vec![Public, HostRead, HostWrite]);
        assert_eq!(allowed(Role::Auditor), vec![Public, Read, HostRead]);
    }

    #[test]
    fn every_route_of_the_router_has_a_rule_and_the_docs_show_the_table() {
        let source = include_str!("lib.rs");
        let mut routes = 0;
        for line in source.lines().map(str::trim).filter(|line| line.starts_with(".route(\"")) {
            let path = line.trim_start_matches(".route(\"").split('"').next().unwrap();
            for method in ["get", "post", "put", "delete"] {
                if line.contains(&format!("{method}(")) {
                    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                    assert!(permission(&method, path).is_some(), "no access rule for {method} {path}");
                    routes += 1;
                }
            }
        }
        assert_eq!(routes, ACCESS_RULES.len(), "the rules name an endpoint the router does not have");
        let security = include_str!("../../docs/security.md");
        let table = role_matrix_markdown();
        assert!(security.contains(&table), "docs/security.md must hold this table:\n{table}");
    }
}
