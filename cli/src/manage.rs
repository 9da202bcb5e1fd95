//! Keys, aliases, policies and grants: the management commands, each one
//! library call through the session's client, printed for people or, with
//! `--json`, for programs.

use crate::exit::CliError;
use crate::keystore::Session;
use crate::output::{AtomicFile, check_dest, emit, emit_json};
use crate::timefmt::utc;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use strongroom::key::{KeyRecord, KeyState};
use strongroom::keyring::{
    ListAliasesOptions, ListOptions, PutKeyPolicyOptions, ScheduleDeletionOptions,
};
use strongroom::policy::{Grant, GrantConstraints, GrantRequest, Policy};
use strongroom::{Action, CreateKeyOptions, KeySpec, Principal};

/// Runs `op` with the session's client, then signs the audit log whatever
/// `op` returned (failed and denied calls are recorded too).
pub fn with<T>(
    session: Session,
    op: impl FnOnce(&strongroom::Client) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let r = op(&session.client);
    let f = session.finish();
    let v = r?;
    f?;
    Ok(v)
}

/// `key create`.
pub fn create_key(
    c: &strongroom::Client,
    spec: KeySpec,
    alias: Option<&str>,
    description: Option<&str>,
    tags: &[String],
    json_out: bool,
) -> Result<(), CliError> {
    let mut opts = CreateKeyOptions::new();
    if let Some(a) = alias {
        opts = opts.alias(a);
    }
    if let Some(d) = description {
        opts = opts.description(d);
    }
    for t in tags {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--tag {t:?} must be written key=value")))?;
        opts = opts.tag(k, v);
    }
    let id = c.create_key(spec, opts)?;
    if json_out {
        emit_json(&json!({ "key_id": id.as_str(), "alias": alias, "spec": spec.as_str() }))
    } else {
        emit(id.as_str())
    }
}

/// `key list`: every key id with its aliases, all pages.
pub fn list_keys(c: &strongroom::Client, json_out: bool) -> Result<(), CliError> {
    let mut entries = Vec::new();
    let mut marker = None;
    loop {
        let page = c.list_keys(ListOptions::default().after(marker))?;
        entries.extend(page.items);
        marker = page.next_marker;
        if marker.is_none() {
            break;
        }
    }
    if json_out {
        let v: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "key_id": e.key_id.as_str(),
                    "aliases": e.aliases.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                })
            })
            .collect();
        return emit_json(&Value::Array(v));
    }
    let mut out = String::new();
    for e in &entries {
        let aliases: Vec<&str> = e.aliases.iter().map(|a| a.as_str()).collect();
        let _ = writeln!(out, "{}  {}", e.key_id.as_str(), aliases.join(", "));
    }
    if entries.is_empty() {
        out.push_str("(no keys)\n");
    }
    emit(&out)
}

fn state_text(s: &KeyState) -> String {
    match s {
        KeyState::Enabled => "Enabled".into(),
        KeyState::Disabled => "Disabled".into(),
        KeyState::PendingDeletion { deletion_date } => {
            format!(
                "PendingDeletion (material destroyed at {})",
                utc(deletion_date.as_secs())
            )
        }
        other => other.to_string(),
    }
}

fn record_json(r: &KeyRecord) -> Value {
    let (state, deletion) = match &r.state {
        KeyState::PendingDeletion { deletion_date } => {
            ("PendingDeletion", Some(utc(deletion_date.as_secs())))
        }
        KeyState::Enabled => ("Enabled", None),
        KeyState::Disabled => ("Disabled", None),
        _ => ("Other", None),
    };
    json!({
        "key_id": r.key_id.as_str(),
        "spec": r.spec.as_str(),
        "usage": r.usage.as_str(),
        "state": state,
        "deletion_date": deletion,
        "description": r.description,
        "created_at": utc(r.created_at.as_secs()),
        "created_by": r.created_by.to_string(),
        "primary_version": r.primary_version,
        "versions": r.versions.iter().map(|v| json!({
            "version": v.version,
            "created_at": utc(v.created_at.as_secs()),
        })).collect::<Vec<_>>(),
        "rotation": r.rotation.map(|s| json!({
            "period_days": s.period_days,
            "next_rotation": utc(s.next_rotation.as_secs()),
        })),
        "min_decrypt_version": r.min_decrypt_version,
        "min_encrypt_version": r.min_encrypt_version,
        "origin": format!("{:?}", r.origin),
        "tags": r.tags,
    })
}

/// `key describe`.
pub fn describe_key(c: &strongroom::Client, key: &str, json_out: bool) -> Result<(), CliError> {
    let r = c.describe_key(key)?;
    if json_out {
        return emit_json(&record_json(&r));
    }
    let mut o = String::new();
    let _ = writeln!(o, "Key id:          {}", r.key_id.as_str());
    let _ = writeln!(o, "Spec:            {}", r.spec);
    let _ = writeln!(o, "Usage:           {}", r.usage);
    let _ = writeln!(o, "State:           {}", state_text(&r.state));
    if !r.description.is_empty() {
        let _ = writeln!(o, "Description:     {}", r.description);
    }
    let _ = writeln!(
        o,
        "Created:         {} by {}",
        utc(r.created_at.as_secs()),
        r.created_by
    );
    let _ = writeln!(o, "Origin:          {:?}", r.origin);
    let _ = writeln!(o, "Primary version: {}", r.primary_version);
    for v in &r.versions {
        let _ = writeln!(
            o,
            "  version {:<6}  created {}",
            v.version,
            utc(v.created_at.as_secs())
        );
    }
    match r.rotation {
        Some(s) => {
            let _ = writeln!(
                o,
                "Rotation:        every {} days, next at {}",
                s.period_days,
                utc(s.next_rotation.as_secs())
            );
        }
        None => {
            let _ = writeln!(o, "Rotation:        on demand only");
        }
    }
    if r.min_decrypt_version > 1 || r.min_encrypt_version > 1 {
        let _ = writeln!(
            o,
            "Version floors:  decrypt >= {}, encrypt >= {}",
            r.min_decrypt_version, r.min_encrypt_version
        );
    }
    for (k, v) in &r.tags {
        let _ = writeln!(o, "Tag:             {k}={v}");
    }
    emit(&o)
}

/// `key schedule-deletion`.
pub fn schedule_deletion(
    c: &strongroom::Client,
    key: &str,
    days: Option<u32>,
) -> Result<(), CliError> {
    let mut opts = ScheduleDeletionOptions::default();
    if let Some(d) = days {
        opts = opts.pending_window_days(d);
    }
    let when = c.schedule_key_deletion(key, opts)?;
    emit(&format!(
        "key {key} is pending deletion: its material is destroyed at {} \
         (cancel with `strongroom key cancel-deletion {key}`)",
        utc(when.as_secs())
    ))
}

/// `key public-key`: the PEM of a signing key.
pub fn public_key(c: &strongroom::Client, key: &str) -> Result<(), CliError> {
    emit(&c.get_public_key(key)?.pem)
}

/// `alias list`.
pub fn list_aliases(
    c: &strongroom::Client,
    key: Option<&str>,
    json_out: bool,
) -> Result<(), CliError> {
    let mut entries = Vec::new();
    let mut marker = None;
    loop {
        let mut opts = ListAliasesOptions::default().after(marker);
        if let Some(k) = key {
            opts = opts.key(k);
        }
        let page = c.list_aliases(opts)?;
        entries.extend(page.items);
        marker = page.next_marker;
        if marker.is_none() {
            break;
        }
    }
    if json_out {
        let v: Vec<Value> = entries
            .iter()
            .map(|e| json!({ "alias": e.alias.as_str(), "key_id": e.key_id.as_str() }))
            .collect();
        return emit_json(&Value::Array(v));
    }
    let mut out = String::new();
    for e in &entries {
        let _ = writeln!(out, "{}  {}", e.alias.as_str(), e.key_id.as_str());
    }
    if entries.is_empty() {
        out.push_str("(no aliases)\n");
    }
    emit(&out)
}

/// `policy put KEY FILE`.
pub fn put_policy(
    c: &strongroom::Client,
    key: &str,
    file: &Path,
    bypass_lockout_check: bool,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| CliError::io("read", file, e))?;
    let policy = Policy::from_json(&text)?;
    let mut opts = PutKeyPolicyOptions::default();
    if bypass_lockout_check {
        opts = opts.bypass_policy_lockout_safety_check();
    }
    c.put_key_policy(key, &policy, opts)?;
    Ok(())
}

/// `policy get KEY [--out FILE]`.
pub fn get_policy(
    c: &strongroom::Client,
    key: &str,
    out: Option<&Path>,
    force: bool,
) -> Result<(), CliError> {
    if let Some(d) = out {
        check_dest(d, force)?;
    }
    let mut text = c.get_key_policy(key)?.to_json();
    text.push('\n');
    match out {
        Some(d) => {
            let mut f = AtomicFile::create(d, force)?;
            f.write_all(text.as_bytes())
                .map_err(|e| CliError::io("write", d, e))?;
            f.commit()
        }
        None => emit(&text),
    }
}

/// An action by name: `Decrypt` or `strongroom:Decrypt`, any case.
pub fn parse_action(s: &str) -> Result<Action, CliError> {
    let want = s.trim();
    let bare = want.strip_prefix("strongroom:").unwrap_or(want);
    Action::ALL
        .iter()
        .copied()
        .find(|a| {
            a.as_str()
                .strip_prefix("strongroom:")
                .is_some_and(|n| n.eq_ignore_ascii_case(bare))
        })
        .ok_or_else(|| {
            CliError::usage(format!(
                "unknown operation {want:?} (e.g. Decrypt, Encrypt, GenerateDataKey, Sign, Verify, DescribeKey)"
            ))
        })
}

/// `grant create`.
pub fn create_grant(
    c: &strongroom::Client,
    key: &str,
    grantee: Principal,
    operations: &[String],
    name: Option<&str>,
    context_equals: &[String],
    json_out: bool,
) -> Result<(), CliError> {
    let ops = operations
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.trim().is_empty())
        .map(parse_action)
        .collect::<Result<Vec<_>, _>>()?;
    if ops.is_empty() {
        return Err(CliError::usage("a grant needs at least one --operation"));
    }
    let mut req = GrantRequest::new(grantee, &ops);
    if let Some(n) = name {
        req = req.name(n);
    }
    if !context_equals.is_empty() {
        req = req.constraints(GrantConstraints::context_equals(crate::data::context(
            context_equals,
        )?));
    }
    let created = c.create_grant(key, req)?;
    // The grant token is not printed: this tool has no use for it, and it
    // is a secret (it lets its holder retire the grant).
    if json_out {
        emit_json(&json!({ "grant_id": created.grant_id }))
    } else {
        emit(&created.grant_id)
    }
}

fn grant_json(g: &Grant) -> Value {
    json!({
        "grant_id": g.grant_id,
        "name": g.name,
        "grantee": g.grantee.to_string(),
        "operations": g.operations.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "context_equals": g.constraints.as_ref().and_then(|c| c.context_equals.as_ref())
            .map(|ctx| ctx.iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect::<serde_json::Map<_, _>>()),
        "context_subset": g.constraints.as_ref().and_then(|c| c.context_subset.as_ref())
            .map(|ctx| ctx.iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect::<serde_json::Map<_, _>>()),
        "expires_at": g.expires_at.map(|t| utc(t.as_secs())),
        "created_at": utc(g.created_at.as_secs()),
        "created_by": g.created_by.to_string(),
    })
}

/// `grant list`.
pub fn list_grants(c: &strongroom::Client, key: &str, json_out: bool) -> Result<(), CliError> {
    let grants = c.list_grants(key)?;
    if json_out {
        return emit_json(&Value::Array(grants.iter().map(grant_json).collect()));
    }
    let mut out = String::new();
    for g in &grants {
        let ops: Vec<&str> = g
            .operations
            .iter()
            .map(|a| a.as_str().trim_start_matches("strongroom:"))
            .collect();
        let _ = write!(
            out,
            "{}  {}  {}  created {} by {}",
            g.grant_id,
            g.grantee,
            ops.join(","),
            utc(g.created_at.as_secs()),
            g.created_by
        );
        if let Some(n) = &g.name {
            let _ = write!(out, "  name={n}");
        }
        if let Some(t) = g.expires_at {
            let _ = write!(out, "  expires {}", utc(t.as_secs()));
        }
        if g.constraints.is_some() {
            let _ = write!(out, "  (context-constrained)");
        }
        out.push('\n');
    }
    if grants.is_empty() {
        out.push_str("(no grants)\n");
    }
    emit(&out)
}

/// Prints a confirmation, unless `--quiet`.
pub fn done(quiet: bool, text: &str) -> Result<(), CliError> {
    if quiet { Ok(()) } else { emit(text) }
}

#[cfg(test)]
mod tests {
    use super::parse_action;
    use strongroom::Action;

    #[test]
    fn actions_by_name() {
        assert_eq!(parse_action("Decrypt").unwrap(), Action::Decrypt);
        assert_eq!(parse_action("strongroom:Encrypt").unwrap(), Action::Encrypt);
        assert_eq!(
            parse_action("generatedatakey").unwrap(),
            Action::GenerateDataKey
        );
        assert_eq!(parse_action("Nope").unwrap_err().code, crate::exit::USAGE);
    }
}
