//! Capability tokens (`docs/CAPABILITIES.md`): biscuit tokens signed by a root Ed25519 key
//! (a `keygen --ed25519` key), whose caveats say which paths, methods, servers and times they
//! allow. Anyone holding a token can narrow it offline by appending a block of more caveats
//! ([`attenuate`]); a server holding only the root's public key checks a request against it
//! ([`CapRoot::authorize`]).
//!
//! Every caveat is a Datalog check built from parameters (never from spliced text), and the
//! server's policy is `allow if true`: a token allows whatever all its checks let through. Blocks
//! appended after the first are not trusted by the authorizer's facts, so an attenuation can only
//! add checks: it never widens its parent.

use crate::core::crypto::{SignerKey, SignerPublic};
use crate::{Error, Result};
use biscuit_auth::builder::{Algorithm, AuthorizerBuilder, BlockBuilder, Term};
use biscuit_auth::error::{FailedCheck, Logic, Token as TokenError};
use biscuit_auth::{Biscuit, KeyPair, PrivateKey, PublicKey, UnverifiedBiscuit};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest token accepted, in bytes of its base64 text (a request line must hold it).
pub const MAX_TOKEN_LEN: usize = 8192;

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Read a container's plaintext (GET/HEAD of a file).
    Read,
    /// List a folder.
    List,
    /// Upload a container (`serve --accept-uploads`).
    Upload,
}

impl Operation {
    /// The name in tokens and on the command line: `read`, `list`, `upload`.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::List => "list",
            Operation::Upload => "upload",
        }
    }

    /// The operation named `s`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "read" => Ok(Operation::Read),
            "list" => Ok(Operation::List),
            "upload" => Ok(Operation::Upload),
            _ => Err(Error::InvalidArgument(format!(
                "unknown method {s:?}: read, list or upload"
            ))),
        }
    }
}

/// One path caveat: an exact path, a prefix (ending in `/`), or a glob (`*` within a segment,
/// `**` across segments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRule {
    /// This path only.
    Exact(String),
    /// Everything under this folder (the text ends in `/`).
    Prefix(String),
    /// A glob, kept as written.
    Glob(String),
}

impl PathRule {
    /// A rule from its text: must start with `/`; `*` makes it a glob, a final `/` a prefix.
    pub fn parse(s: &str) -> Result<Self> {
        if !s.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "path {s:?}: paths start with / (the path in the server's URLs)"
            )));
        }
        if s.contains('\0') || s.split('/').any(|seg| seg == "..") {
            return Err(Error::InvalidArgument(format!(
                "path {s:?}: no NUL and no .. segments"
            )));
        }
        Ok(if s.contains('*') {
            PathRule::Glob(s.to_string())
        } else if s.ends_with('/') {
            PathRule::Prefix(s.to_string())
        } else {
            PathRule::Exact(s.to_string())
        })
    }

    /// The anchored regular expression of a glob: `**` any characters, `*` any but `/`, the rest
    /// literal.
    fn regex(glob: &str) -> String {
        let mut re = String::from("^");
        let mut rest = glob;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("**") {
                re.push_str(".*");
                rest = after;
                continue;
            }
            rest = &rest[c.len_utf8()..];
            if c == '*' {
                re.push_str("[^/]*");
            } else {
                let mut buf = [0u8; 4];
                for ch in c.encode_utf8(&mut buf).chars() {
                    if "\\.+?()|[]{}^$#&-~".contains(ch) {
                        re.push('\\');
                    }
                    re.push(ch);
                }
            }
        }
        re.push('$');
        re
    }
}

/// The caveats of one block: each kind given restricts; each kind left empty does not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caveats {
    /// Allowed paths (any of them).
    pub paths: Vec<PathRule>,
    /// Allowed operations (any of them).
    pub operations: Vec<Operation>,
    /// Servers (`serve --cap-audience NAME`) the token is for (any of them).
    pub audiences: Vec<String>,
    /// Not valid after this time.
    pub expires: Option<SystemTime>,
}

impl Caveats {
    /// True when nothing is restricted.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
            && self.operations.is_empty()
            && self.audiences.is_empty()
            && self.expires.is_none()
    }

    /// The block's Datalog checks with their parameters.
    fn block(&self) -> Result<BlockBuilder> {
        let mut block = BlockBuilder::new();
        let mut add = |source: String, params: HashMap<String, Term>| -> Result<()> {
            let b = std::mem::take(&mut block);
            block = b
                .code_with_params(source, params, HashMap::new())
                .map_err(token_error)?;
            Ok(())
        };
        if !self.paths.is_empty() {
            let mut params = HashMap::new();
            let alternatives: Vec<String> = self
                .paths
                .iter()
                .enumerate()
                .map(|(i, rule)| {
                    let (text, test) = match rule {
                        PathRule::Exact(p) => (p.clone(), format!("$r == {{p{i}}}")),
                        // The folder itself (named without its final `/`), and all under it.
                        PathRule::Prefix(p) if p == "/" => (p.clone(), format!("$r.starts_with({{p{i}}})")),
                        PathRule::Prefix(p) => {
                            params.insert(format!("f{i}"), Term::Str(p.trim_end_matches('/').to_string()));
                            (
                                p.clone(),
                                format!("$r == {{f{i}}} or resource($r), $r.starts_with({{p{i}}})"),
                            )
                        }
                        PathRule::Glob(g) => (PathRule::regex(g), format!("$r.matches({{p{i}}})")),
                    };
                    params.insert(format!("p{i}"), Term::Str(text));
                    format!("resource($r), {test}")
                })
                .collect();
            add(format!("check if {}", alternatives.join(" or ")), params)?;
        }
        let names: Vec<&str> = self.operations.iter().map(|op| op.name()).collect();
        if let Some((source, params)) = any_fact("operation", "m", &names) {
            add(source, params)?;
        }
        let audiences: Vec<&str> = self.audiences.iter().map(String::as_str).collect();
        if let Some((source, params)) = any_fact("audience", "a", &audiences) {
            add(source, params)?;
        }
        if let Some(t) = self.expires {
            let secs = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
            let params = HashMap::from([("exp".to_string(), Term::Date(secs))]);
            add("check if time($t), $t <= {exp}".into(), params)?;
        }
        Ok(block)
    }
}

/// `check if NAME({P0}) or NAME({P1}) …` with its parameters `P0`… bound to `values`; `None`
/// for no values (no restriction).
fn any_fact(name: &str, prefix: &str, values: &[&str]) -> Option<(String, HashMap<String, Term>)> {
    if values.is_empty() {
        return None;
    }
    let params: HashMap<String, Term> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("{prefix}{i}"), Term::Str(v.to_string())))
        .collect();
    let alternatives: Vec<String> = (0..values.len())
        .map(|i| format!("{name}({{{prefix}{i}}})"))
        .collect();
    Some((format!("check if {}", alternatives.join(" or ")), params))
}

fn token_error(e: TokenError) -> Error {
    Error::InvalidArgument(format!("capability token: {e}"))
}

/// The biscuit key pair of a root signing key.
fn key_pair(root: &SignerKey) -> Result<KeyPair> {
    let private =
        PrivateKey::from_bytes(root.seed(), Algorithm::Ed25519).map_err(|e| token_error(e.into()))?;
    Ok(KeyPair::from(&private))
}

fn public_key(root: &SignerPublic) -> Result<PublicKey> {
    PublicKey::from_bytes(root.as_bytes(), Algorithm::Ed25519).map_err(|e| token_error(e.into()))
}

/// A new token signed by `root`, restricted by `caveats` (in its first block). Returns its
/// base64 text (URL-safe: fit for `?cap=`).
pub fn issue(root: &SignerKey, caveats: &Caveats) -> Result<String> {
    let block = caveats.block()?;
    let token = Biscuit::builder()
        .merge(block)
        .build(&key_pair(root)?)
        .map_err(token_error)?;
    token.to_base64().map_err(token_error)
}

/// `token` narrowed by `caveats`, appended as a new block; needs no key and no contact with the
/// issuer. The result allows at most what `token` allowed.
pub fn attenuate(token: &str, caveats: &Caveats) -> Result<String> {
    if caveats.is_empty() {
        return Err(Error::InvalidArgument(
            "an attenuation needs at least one caveat (--path, --method, --audience, --expires)".into(),
        ));
    }
    let parent = parse_unverified(token)?;
    parent
        .append(caveats.block()?)
        .and_then(|t| t.to_base64())
        .map_err(token_error)
}

fn parse_unverified(token: &str) -> Result<UnverifiedBiscuit> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_LEN {
        return Err(Error::InvalidArgument(format!(
            "the capability token is longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    UnverifiedBiscuit::from_base64(token)
        .map_err(|e| Error::InvalidArgument(format!("not a capability token: {e}")))
}

/// What a token says, block by block.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// Each block's Datalog source (block 0: the issuer's; later: attenuations).
    pub blocks: Vec<String>,
    /// Each block's revocation id, hex.
    pub revocation_ids: Vec<String>,
    /// `Some(true)` when checked against a root key and signed by it; `None` when not checked.
    pub root_ok: Option<bool>,
}

/// Decodes `token` without trusting it (and checks its signatures against `root` if given).
pub fn inspect(token: &str, root: Option<&SignerPublic>) -> Result<Inspection> {
    let t = parse_unverified(token)?;
    let blocks = (0..t.block_count())
        .map(|i| t.print_block_source(i).map_err(token_error))
        .collect::<Result<Vec<_>>>()?;
    let revocation_ids = t.revocation_identifiers().iter().map(hex::encode).collect();
    let root_ok = match root {
        Some(root) => Some(Biscuit::from_base64(token.trim(), public_key(root)?).is_ok()),
        None => None,
    };
    Ok(Inspection {
        blocks,
        revocation_ids,
        root_ok,
    })
}

/// The plain-words reading of one block's checks (for `cap inspect`): one line per check,
/// e.g. `paths: under /media/, or exactly /a.mp4`, `methods: read or list`, `until
/// 2026-12-02T00:00:00Z`. A check this build did not write is shown as its Datalog.
pub fn describe(block_source: &str, now: SystemTime) -> Vec<String> {
    block_source
        .lines()
        .map(|l| l.trim().trim_end_matches(';'))
        .filter(|l| !l.is_empty())
        .map(|l| describe_check(l, now).unwrap_or_else(|| l.to_string()))
        .collect()
}

fn describe_check(check: &str, now: SystemTime) -> Option<String> {
    let body = check.strip_prefix("check if ")?;
    let alternatives: Vec<&str> = body.split(" or ").collect();
    if body.starts_with("time($t), $t <= ") {
        let when = body.strip_prefix("time($t), $t <= ")?;
        let at = humantime::parse_rfc3339(when).ok()?;
        let state = if at < now { " (expired)" } else { "" };
        return Some(format!("until {when}{state}"));
    }
    let words: Option<Vec<String>> = alternatives
        .iter()
        .map(|alt| {
            let text = quoted(alt)?;
            Some(if alt.starts_with("resource($r), $r == ") {
                format!("exactly {text}")
            } else if alt.starts_with("resource($r), $r.starts_with(") {
                format!("under {text}")
            } else if alt.starts_with("resource($r), $r.matches(") {
                format!("matching {text}")
            } else if alt.starts_with("operation(") || alt.starts_with("audience(") {
                text
            } else {
                return None;
            })
        })
        .collect();
    let mut words = words?;
    // A prefix rule is written as the folder itself or anything under it: one phrase.
    let mut i = 0;
    while i + 1 < words.len() {
        if let (Some(folder), Some(under)) = (
            words[i].strip_prefix("exactly "),
            words[i + 1].strip_prefix("under "),
        ) {
            if under.strip_suffix('/') == Some(folder) {
                words[i] = format!("{under} and everything in it");
                words.remove(i + 1);
            }
        }
        i += 1;
    }
    let kind = if body.starts_with("resource(") {
        "paths"
    } else if body.starts_with("operation(") {
        "methods"
    } else if body.starts_with("audience(") {
        "servers"
    } else {
        return None;
    };
    Some(format!("{kind}: {}", words.join(", or ")))
}

/// The one string literal in `s` (Datalog escapes kept as written).
fn quoted(s: &str) -> Option<String> {
    let start = s.find('"')? + 1;
    let end = s.rfind('"')?;
    (end >= start).then(|| s[start..end].to_string())
}

/// A token that passed the root's signature check (but not yet any request's caveats).
pub struct Verified {
    token: Biscuit,
    id: String,
}

impl Verified {
    /// A short id fit for logs: the first 8 bytes of the last block's revocation id, hex. The
    /// token itself is never logged.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The revocation ids of its blocks.
    pub fn revocation_ids(&self) -> Vec<Vec<u8>> {
        self.token.revocation_identifiers()
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verified(cap {})", self.id)
    }
}

/// Why a request was refused: `Unauthenticated` (401: no token, a malformed one, another
/// root's) or `Forbidden` (403: a valid token that does not allow this request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401, and why.
    Unauthenticated(String),
    /// 403, and why.
    Forbidden(String),
}

/// The id that revokes a token and every attenuation made from it, but not its siblings: its
/// last block's revocation id (an attenuation of it carries that block too).
pub fn revocation_id(token: &str) -> Result<Vec<u8>> {
    parse_unverified(token)?
        .revocation_identifiers()
        .pop()
        .ok_or_else(|| Error::InvalidArgument("a capability token without blocks".into()))
}

const REVOCATIONS_FORMAT: &str = "qeltrix revocations 1";

/// A signed revocation list: the revocation ids no server may accept, under a sequence number
/// that only grows. The store holding it may have no compare-and-swap (Garage has none), so a
/// server keeps the highest sequence it has seen and refuses an older list (a replay).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revocations {
    /// Raised by one at each revocation.
    pub sequence: u64,
    /// Revoked block ids.
    pub ids: std::collections::BTreeSet<Vec<u8>>,
}

impl Revocations {
    /// What the signature covers: `"qeltrix revocations 1"` ‖ u64 sequence ‖ u64 count ‖ each
    /// id in ascending order as u16 length ‖ bytes.
    fn message(&self) -> Vec<u8> {
        let mut m = REVOCATIONS_FORMAT.as_bytes().to_vec();
        m.extend_from_slice(&self.sequence.to_le_bytes());
        m.extend_from_slice(&(self.ids.len() as u64).to_le_bytes());
        for id in &self.ids {
            m.extend_from_slice(&(id.len() as u16).to_le_bytes());
            m.extend_from_slice(id);
        }
        m
    }

    /// The list as signed JSON, signed by `root`.
    pub fn to_signed_json(&self, root: &SignerKey) -> String {
        let doc = serde_json::json!({
            "format": REVOCATIONS_FORMAT,
            "sequence": self.sequence,
            "revoked": self.ids.iter().map(hex::encode).collect::<Vec<_>>(),
            "signer": root.public().to_string(),
            "signature": hex::encode(root.sign(&self.message())),
        });
        format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).expect("JSON values serialize")
        )
    }

    /// A signed list, checked: its format, and a signature by `root` over exactly its content.
    pub fn parse(text: &str, root: &SignerPublic) -> Result<Self> {
        let bad = |why: &str| Error::InvalidArgument(format!("revocation list: {why}"));
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(&format!("not JSON: {e}")))?;
        if doc["format"] != REVOCATIONS_FORMAT {
            return Err(bad("not a qeltrix revocation list (format)"));
        }
        let sequence = doc["sequence"]
            .as_u64()
            .ok_or_else(|| bad("no sequence number"))?;
        let ids = doc["revoked"]
            .as_array()
            .ok_or_else(|| bad("no revoked list"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(|h| hex::decode(h).ok())
                    .filter(|id| id.len() <= 1024)
            })
            .collect::<Option<std::collections::BTreeSet<_>>>()
            .ok_or_else(|| bad("a revoked id that is not hex"))?;
        let signer: SignerPublic = doc["signer"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no signer"))?;
        if signer != *root {
            return Err(bad(&format!("signed by {signer}, not by the root {root}")));
        }
        let mut signature = [0u8; 64];
        doc["signature"]
            .as_str()
            .filter(|h| h.len() == 128 && hex::decode_to_slice(h, &mut signature).is_ok())
            .ok_or_else(|| bad("no signature"))?;
        let list = Revocations { sequence, ids };
        if !root.verifies(&list.message(), &signature) {
            return Err(bad("the signature does not match its content"));
        }
        Ok(list)
    }
}

/// A server's trust in one root key: checks tokens and requests, and the revocation list in
/// force.
pub struct CapRoot {
    root: PublicKey,
    root_signer: SignerPublic,
    audience: Option<String>,
    revoked: std::sync::RwLock<Option<(Arc<Revocations>, Arc<str>)>>,
}

impl fmt::Debug for CapRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CapRoot(ed25519/{}, audience {:?})",
            self.root.to_bytes_hex(),
            self.audience
        )
    }
}

impl CapRoot {
    /// Trusts tokens signed by `root`; `audience` is this server's name for audience caveats
    /// (a server without one refuses every token that names servers).
    pub fn new(root: &SignerPublic, audience: Option<String>) -> Result<Self> {
        Ok(CapRoot {
            root: public_key(root)?,
            root_signer: *root,
            audience,
            revoked: std::sync::RwLock::new(None),
        })
    }

    /// Puts the signed list `text` in force, if it is newer than the one in force. Returns its
    /// sequence number, or refuses: a bad signature, another signer, or an older sequence (a
    /// replayed list). The same sequence again is accepted only with the same content.
    pub fn load_revocations(&self, text: &str) -> Result<u64> {
        let list = Revocations::parse(text, &self.root_signer)?;
        let mut current = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        if let Some((old, _)) = current.as_ref() {
            if list.sequence < old.sequence || (list.sequence == old.sequence && list != **old) {
                return Err(Error::InvalidArgument(format!(
                    "revocation list: sequence {} is older than the {} in force (a replayed or \
                     stale list); kept the list in force",
                    list.sequence, old.sequence
                )));
            }
        }
        let sequence = list.sequence;
        *current = Some((Arc::new(list), Arc::from(text)));
        Ok(sequence)
    }

    /// The revocation list in force, as it was loaded (for publishing), if any.
    pub fn revocations_text(&self) -> Option<Arc<str>> {
        let current = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().map(|(_, text)| Arc::clone(text))
    }

    /// Checks `token`'s signatures against the root.
    pub fn verify(&self, token: &str) -> std::result::Result<Verified, Refusal> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(Refusal::Unauthenticated(format!(
                "the capability token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let token = Biscuit::from_base64(token, self.root).map_err(|e| {
            Refusal::Unauthenticated(match e {
                TokenError::Format(biscuit_auth::error::Format::Signature(_)) => {
                    "the capability token is not signed by this server's root key".into()
                }
                TokenError::Format(biscuit_auth::error::Format::UnknownPublicKey) => {
                    "the capability token is not signed by this server's root key".into()
                }
                other => format!("malformed capability token: {other}"),
            })
        })?;
        let id = token
            .revocation_identifiers()
            .last()
            .map(|r| hex::encode(&r[..r.len().min(8)]))
            .unwrap_or_default();
        Ok(Verified { token, id })
    }

    /// Does `token` allow `operation` on `resource` (a URL path) now? `Forbidden` names the
    /// failed caveats.
    pub fn authorize(
        &self,
        token: &Verified,
        operation: Operation,
        resource: &str,
        now: SystemTime,
    ) -> std::result::Result<(), Refusal> {
        if let Some((list, _)) = self.revoked.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if token.revocation_ids().iter().any(|id| list.ids.contains(id)) {
                return Err(Refusal::Forbidden(format!(
                    "the capability token is revoked (revocation list sequence {})",
                    list.sequence
                )));
            }
        }
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        let mut params = HashMap::from([
            ("res".to_string(), Term::Str(resource.to_string())),
            ("op".to_string(), Term::Str(operation.name().to_string())),
            ("now".to_string(), Term::Date(secs)),
        ]);
        let mut source = String::from("resource({res}); operation({op}); time({now});");
        if let Some(a) = &self.audience {
            params.insert("aud".into(), Term::Str(a.clone()));
            source.push_str(" audience({aud});");
        }
        source.push_str(" allow if true;");
        let built = AuthorizerBuilder::new()
            .set_limits(check_limits())
            .code_with_params(source, params, HashMap::new())
            .and_then(|b| b.build(&token.token))
            .map_err(|e| Refusal::Forbidden(format!("the capability check could not run: {e}")));
        let mut authorizer = built?;
        match authorizer.authorize() {
            Ok(_) => Ok(()),
            Err(TokenError::FailedLogic(Logic::Unauthorized { checks, .. })) => {
                Err(Refusal::Forbidden(refusal_words(&checks)))
            }
            Err(e) => Err(Refusal::Forbidden(format!("the capability check failed: {e}"))),
        }
    }
}

/// What one check of a token may cost: biscuit's defaults for facts and iterations, but 50 ms
/// rather than its 1 ms. The time limit is wall-clock, so on a busy machine (or a debug build) a
/// path glob's checks, whose regexes are compiled at each run, passed 1 ms and refused a token
/// that allowed the request.
fn check_limits() -> biscuit_auth::AuthorizerLimits {
    biscuit_auth::AuthorizerLimits {
        max_time: Duration::from_millis(50),
        ..Default::default()
    }
}

/// The failed checks in words: which kind of caveat refused, then the check itself.
fn refusal_words(checks: &[FailedCheck]) -> String {
    let words: Vec<String> = checks
        .iter()
        .map(|c| {
            let (block, rule) = match c {
                FailedCheck::Block(b) => (Some(b.block_id), b.rule.as_str()),
                FailedCheck::Authorizer(a) => (None, a.rule.as_str()),
            };
            let what = if rule.contains("time(") {
                "expired"
            } else if rule.contains("resource(") {
                "not for this path"
            } else if rule.contains("operation(") {
                "not for this method"
            } else if rule.contains("audience(") {
                "not for this server"
            } else {
                "a caveat failed"
            };
            match block {
                Some(b) => format!("{what} (block {b}: {rule})"),
                None => format!("{what} ({rule})"),
            }
        })
        .collect();
    format!(
        "the capability token does not allow this request: {}",
        words.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededEntropy;

    fn root(seed: u8) -> SignerKey {
        SignerKey::generate(&SeededEntropy([seed; 32]))
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_block_reads_in_plain_words() {
        let source =
            "check if resource($r), $r == \"/media\" or resource($r), $r.starts_with(\"/media/\") or resource($r), $r == \"/a.mp4\";\n\
                      check if operation(\"read\") or operation(\"list\");\n\
                      check if audience(\"srv\");\n\
                      check if time($t), $t <= 2020-01-01T00:00:00Z;\n\
                      check if something_else(1);";
        assert_eq!(
            describe(source, at(2_000_000_000)),
            [
                "paths: /media/ and everything in it, or exactly /a.mp4",
                "methods: read, or list",
                "servers: srv",
                "until 2020-01-01T00:00:00Z (expired)",
                "check if something_else(1)",
            ]
        );
    }

    #[test]
    fn globs_become_anchored_regexes() {
        assert_eq!(PathRule::regex("/media/*.mp4"), "^/media/[^/]*\\.mp4$");
        assert_eq!(PathRule::regex("/a/**"), "^/a/.*$");
        assert_eq!(PathRule::regex("/x(1)+"), "^/x\\(1\\)\\+$");
    }

    #[test]
    fn a_token_allows_exactly_its_caveats_and_attenuation_only_narrows() {
        let key = root(1);
        let caps = CapRoot::new(&key.public(), Some("srv".into())).unwrap();
        let token = issue(
            &key,
            &Caveats {
                paths: vec![PathRule::parse("/media/").unwrap()],
                operations: vec![Operation::Read, Operation::List],
                audiences: vec!["srv".into()],
                expires: Some(at(2_000)),
            },
        )
        .unwrap();
        let v = caps.verify(&token).unwrap();
        assert_eq!(
            caps.authorize(&v, Operation::Read, "/media/a.mp4", at(1_000)),
            Ok(())
        );
        let refused = |op, path, now| match caps.authorize(&v, op, path, at(now)) {
            Err(Refusal::Forbidden(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(refused(Operation::Read, "/other/a.mp4", 1_000).contains("not for this path"));
        assert!(refused(Operation::Upload, "/media/a.mp4", 1_000).contains("not for this method"));
        assert!(refused(Operation::Read, "/media/a.mp4", 3_000).contains("expired"));
        let elsewhere = CapRoot::new(&key.public(), Some("other".into())).unwrap();
        let v2 = elsewhere.verify(&token).unwrap();
        assert!(
            matches!(elsewhere.authorize(&v2, Operation::Read, "/media/a.mp4", at(1_000)), Err(Refusal::Forbidden(w)) if w.contains("server"))
        );

        // Narrowed to one file: the rest of /media/ is refused; widening attempts do nothing.
        let narrow = attenuate(
            &token,
            &Caveats {
                paths: vec![PathRule::parse("/media/a.mp4").unwrap()],
                ..Caveats::default()
            },
        )
        .unwrap();
        let n = caps.verify(&narrow).unwrap();
        assert_eq!(
            caps.authorize(&n, Operation::Read, "/media/a.mp4", at(1_000)),
            Ok(())
        );
        assert!(caps
            .authorize(&n, Operation::Read, "/media/b.mp4", at(1_000))
            .is_err());
        let wider = attenuate(
            &token,
            &Caveats {
                paths: vec![PathRule::parse("/").unwrap()],
                expires: Some(at(9_000)),
                ..Caveats::default()
            },
        )
        .unwrap();
        let w = caps.verify(&wider).unwrap();
        assert!(caps
            .authorize(&w, Operation::Read, "/other/x", at(1_000))
            .is_err());
        assert!(caps
            .authorize(&w, Operation::Read, "/media/a.mp4", at(3_000))
            .is_err());
        assert_ne!(n.id(), v.id(), "each attenuation has its own id");
    }

    #[test]
    fn other_roots_and_garbage_are_unauthenticated() {
        let token = issue(&root(1), &Caveats::default()).unwrap();
        let other = CapRoot::new(&root(2).public(), None).unwrap();
        assert!(matches!(other.verify(&token), Err(Refusal::Unauthenticated(w)) if w.contains("root key")));
        assert!(
            matches!(other.verify("not-a-token"), Err(Refusal::Unauthenticated(w)) if w.contains("malformed"))
        );
        let mut flipped = token.into_bytes();
        let mid = flipped.len() / 2;
        flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let ours = CapRoot::new(&root(1).public(), None).unwrap();
        assert!(matches!(ours.verify(&flipped), Err(Refusal::Unauthenticated(_))));
    }

    #[test]
    fn a_revoked_token_and_its_attenuations_are_refused_its_siblings_not() {
        let key = root(1);
        let caps = CapRoot::new(&key.public(), None).unwrap();
        let parent = issue(&key, &Caveats::default()).unwrap();
        let narrow = |t: &str, p: &str| {
            attenuate(
                t,
                &Caveats {
                    paths: vec![PathRule::parse(p).unwrap()],
                    ..Caveats::default()
                },
            )
            .unwrap()
        };
        let (a, b) = (narrow(&parent, "/a/"), narrow(&parent, "/b/"));
        let a2 = narrow(&a, "/a/x");
        let list = |sequence, ids: &[&str]| Revocations {
            sequence,
            ids: ids.iter().map(|t| revocation_id(t).unwrap()).collect(),
        };
        let ok = |t: &str, p: &str| caps.authorize(&caps.verify(t).unwrap(), Operation::Read, p, at(0));
        assert_eq!(
            caps.load_revocations(&list(1, &[]).to_signed_json(&key)).unwrap(),
            1
        );
        assert!(ok(&a2, "/a/x").is_ok());
        caps.load_revocations(&list(2, &[&a]).to_signed_json(&key))
            .unwrap();
        for t in [&a, &a2] {
            assert!(matches!(ok(t, "/a/x"), Err(Refusal::Forbidden(w)) if w.contains("revoked")));
        }
        assert!(ok(&b, "/b/y").is_ok() && ok(&parent, "/z").is_ok());
        // A replay of sequence 1, another signer, a forged content: refused, list 2 stays.
        assert!(caps
            .load_revocations(&list(1, &[]).to_signed_json(&key))
            .unwrap_err()
            .to_string()
            .contains("older"));
        assert!(caps
            .load_revocations(&list(3, &[]).to_signed_json(&root(2)))
            .is_err());
        let forged = list(3, &[])
            .to_signed_json(&key)
            .replace("\"sequence\": 3", "\"sequence\": 4");
        assert!(caps
            .load_revocations(&forged)
            .unwrap_err()
            .to_string()
            .contains("signature"));
        assert!(ok(&a, "/a/x").is_err());
        assert!(caps.revocations_text().unwrap().contains("\"sequence\": 2"));
    }

    #[test]
    fn bad_paths_and_methods_are_refused_at_issue() {
        assert!(PathRule::parse("media/").is_err());
        assert!(PathRule::parse("/a/../b").is_err());
        assert!(Operation::parse("write").is_err());
        assert!(attenuate("x", &Caveats::default()).is_err());
    }
}
