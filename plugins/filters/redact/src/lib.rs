//! `redact` (procwarden:filter@0.1.0): masks secrets in process output before it reaches a
//! client: cloud access keys (AWS `AKIA…`/`ASIA…`, Google `AIza…`), GitHub (`ghp_…`,
//! `github_pat_…`), GitLab (`glpat-…`) and Slack (`xox?-…`) tokens, JWTs, PEM private-key
//! blocks, and the value of `NAME=value` where NAME matches a configurable list.
//!
//! Each match becomes `[REDACTED:kind]` (for `NAME=value`, only the value is replaced), and
//! the number of replacements is reported. One pass over the bytes, eight at a time, stops
//! only at five rare trigger bytes (`=`, `-`, `_`, `A`, `J`); hand-written checks around
//! literal anchors (no regular-expression engine) decide there, so a 32 KiB read is scanned
//! in microseconds. Each token needs a word boundary before it and a minimum length after
//! it, which keeps git SHAs, UUIDs and base64 blobs untouched. Text without secrets is
//! returned without a copy.
//!
//! Settings: `names` (a list of globs, `*` matching any run of bytes, compared
//! case-insensitively); default [`DEFAULT_NAMES`]. [`Redactor::from_settings`] reads them
//! from the flattened settings (`names.0`, `names.1`, …), for the component and for the host,
//! which runs this crate natively as its built-in `redact` filter: the same settings give the
//! same answers either way.
#![cfg_attr(target_arch = "wasm32", no_std)]
// On wasm32 the component is `no_std`: it imports no WASI, so each call instantiates one core
// module instead of eighteen. Native builds (the host's built-in, the unit tests) keep `std`.
extern crate alloc;
#[cfg(target_arch = "wasm32")]
use procwarden_plugin_bare as _;

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;

/// Variable names whose values are masked by default.
pub const DEFAULT_NAMES: &[&str] = &[
    "*_TOKEN",
    "*_SECRET",
    "*_SECRET_KEY",
    "*_PASSWORD",
    "PASSWORD",
    "*_API_KEY",
    "API_KEY",
    "SECRET",
    "TOKEN",
    "*_ACCESS_KEY",
];

/// Whether `name` matches `glob` (ASCII case-insensitively): `*` matches any run of bytes,
/// every other byte itself. No allocation: the glob's literal parts are compared in place.
pub fn glob_matches(glob: &str, name: &[u8]) -> bool {
    let mut parts = glob.as_bytes().split(|b| *b == b'*');
    let Some(first) = parts.next() else {
        return name.is_empty();
    };
    if !starts_with_ci(name, first) {
        return false;
    }
    let mut rest = &name[first.len()..];
    let mut pending: Option<&[u8]> = None;
    let mut any = false;
    for part in parts {
        any = true;
        if let Some(mid) = pending.replace(part) {
            match find_ci(rest, mid) {
                Some(at) => rest = &rest[at + mid.len()..],
                None => return false,
            }
        }
    }
    match pending {
        // The last part must end the name.
        Some(last) if any => rest.len() >= last.len() && ends_with_ci(rest, last),
        _ => rest.is_empty(),
    }
}

/// [`glob_matches`], quicker for a glob with no `*` or one (every default one), where the
/// stars are known.
fn glob_matches_at(glob: &str, stars: Option<(usize, usize)>, name: &[u8]) -> bool {
    let g = glob.as_bytes();
    match stars {
        None => g.eq_ignore_ascii_case(name),
        Some((first, last)) if first == last => {
            let (prefix, suffix) = (&g[..first], &g[first + 1..]);
            name.len() >= prefix.len() + suffix.len()
                && starts_with_ci(name, prefix)
                && ends_with_ci(name, suffix)
        }
        Some(_) => glob_matches(glob, name),
    }
}

fn starts_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

fn ends_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[hay.len() - needle.len()..].eq_ignore_ascii_case(needle)
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn boundary_before(bytes: &[u8], at: usize) -> bool {
    at == 0 || !is_word(bytes[at - 1])
}

/// Length of the run at `from` of bytes satisfying `ok`.
fn run(bytes: &[u8], from: usize, ok: impl Fn(u8) -> bool) -> usize {
    bytes[from..].iter().take_while(|b| ok(**b)).count()
}

fn b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn upper_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn alnum_dash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// A token that starts with a literal prefix: `min..=max` bytes of `charset` follow it, and
/// no word byte after them.
struct Prefixed {
    prefix: &'static [u8],
    kind: &'static str,
    min: usize,
    max: usize,
    charset: fn(u8) -> bool,
}

const fn p(
    prefix: &'static [u8],
    kind: &'static str,
    min: usize,
    max: usize,
    charset: fn(u8) -> bool,
) -> Prefixed {
    Prefixed {
        prefix,
        kind,
        min,
        max,
        charset,
    }
}

/// Tokens found at an `A`: the prefix starts at the trigger.
const AT_A: &[Prefixed] = &[
    p(b"AKIA", "aws-access-key", 16, 16, upper_digit),
    p(b"ASIA", "aws-access-key", 16, 16, upper_digit),
    p(b"AIza", "google-api-key", 35, 35, b64url),
];

/// Tokens found at a `_`: the prefix ends with it.
const AT_UNDERSCORE: &[Prefixed] = &[
    p(b"ghp_", "github-token", 36, 255, alnum),
    p(b"gho_", "github-token", 36, 255, alnum),
    p(b"ghu_", "github-token", 36, 255, alnum),
    p(b"ghs_", "github-token", 36, 255, alnum),
    p(b"ghr_", "github-token", 36, 255, alnum),
    p(b"github_pat_", "github-token", 22, 255, is_word),
];

/// Tokens found at a `-`: the prefix ends with it.
const AT_DASH: &[Prefixed] = &[
    p(b"glpat-", "gitlab-token", 20, 255, b64url),
    p(b"xoxb-", "slack-token", 10, 255, alnum_dash),
    p(b"xoxp-", "slack-token", 10, 255, alnum_dash),
    p(b"xoxa-", "slack-token", 10, 255, alnum_dash),
    p(b"xoxr-", "slack-token", 10, 255, alnum_dash),
    p(b"xoxs-", "slack-token", 10, 255, alnum_dash),
];

/// A match: byte range and kind.
type Hit = (usize, usize, &'static str);

/// The redactor: the `NAME` globs it masks values of.
#[derive(Debug, Clone)]
pub struct Redactor<'a> {
    names: Vec<Cow<'a, str>>,
    /// Where each glob's first and last `*` are (`None`: it has none).
    stars: Vec<Option<(usize, usize)>>,
    /// The last bytes a secret name can end with (ASCII lower case, padded by repeating
    /// one), when every glob ends with a literal byte and there are at most four of them: an
    /// `=` after any other byte is passed over without matching the globs. `None`: every `=`
    /// is looked at.
    name_ends: Option<[u8; 4]>,
}

impl Default for Redactor<'static> {
    fn default() -> Self {
        Self::new(DEFAULT_NAMES.iter().copied())
    }
}

/// Bytes at which a secret can be recognised: `=` (NAME=value), `-` (PEM blocks, GitLab and
/// Slack tokens), `_` (GitHub tokens), `A` (cloud keys) and `J` (the `eyJ` of a JWT). Only
/// rare bytes: common letters such as `e` would stop the scan every few bytes.
static TRIGGER: [bool; 256] = {
    let mut t = [false; 256];
    let mut k = 0;
    let starts = b"=-_AJ";
    while k < starts.len() {
        t[starts[k] as usize] = true;
        k += 1;
    }
    t
};

/// Whether any byte of `w` is a trigger byte (the classic zero-byte test on `w` XOR each
/// trigger repeated: exact for "any", no branch per byte).
#[inline(always)]
fn has_trigger(w: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    (zero(w ^ (LO * u64::from(b'='))))
        | zero(w ^ (LO * u64::from(b'-')))
        | zero(w ^ (LO * u64::from(b'_')))
        | zero(w ^ (LO * u64::from(b'A')))
        | zero(w ^ (LO * u64::from(b'J')))
        != 0
}

/// Bytes examined at once by the close look's skip loop.
const CHUNK: usize = 8;
/// Bytes tested at once for a possible secret.
const BLOCK: usize = 32;
/// Bytes before a block the test reads (the `g` of `github_pat_` is ten before its last `_`).
const BEHIND: usize = 10;
/// Bytes after a block the test reads (the `K` of `AKIA`).
const AHEAD: usize = 1;
const WINDOW: usize = BEHIND + BLOCK + AHEAD;

/// The last bytes of the globs, lower-cased (`| 0x20`, which keeps every byte that equals one
/// of them ignoring ASCII case equal to it), if each ends with a literal byte and there are
/// at most four distinct ones. An empty glob matches no name (a name is never empty).
fn name_ends<'g>(globs: impl Iterator<Item = &'g [u8]>) -> Option<[u8; 4]> {
    let mut ends: Vec<u8> = Vec::new();
    for glob in globs {
        match glob.last() {
            None => continue,
            Some(b'*') => return None,
            Some(b) => {
                let b = b | 0x20;
                if !ends.contains(&b) {
                    ends.push(b);
                }
            }
        }
    }
    if ends.len() > 4 {
        return None;
    }
    let first = ends.first().copied().unwrap_or(0);
    let mut out = [first; 4];
    out[..ends.len()].copy_from_slice(&ends);
    Some(out)
}

impl<'a> Redactor<'a> {
    pub fn new(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self::with_names(names.into_iter().map(Cow::Borrowed).collect())
    }

    fn with_names(names: Vec<Cow<'a, str>>) -> Self {
        let name_ends = name_ends(names.iter().map(|g| g.as_bytes()));
        let stars = names
            .iter()
            .map(|g| Some((g.find('*')?, g.rfind('*')?)))
            .collect();
        Self {
            names,
            stars,
            name_ends,
        }
    }

    /// The redactor a filter's flattened settings ask for: the values of the `names.N` keys
    /// (the `names` list), or [`DEFAULT_NAMES`] when there are none. Other keys are ignored.
    pub fn from_settings<K, V>(settings: impl IntoIterator<Item = (K, V)>) -> Redactor<'static>
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let names: Vec<Cow<'static, str>> = settings
            .into_iter()
            .filter(|(k, _)| k.as_ref().starts_with("names."))
            .map(|(_, v)| Cow::Owned(v.into()))
            .collect();
        if names.is_empty() {
            return Redactor::default();
        }
        Redactor::with_names(names)
    }

    fn secret_name(&self, name: &[u8]) -> bool {
        self.names
            .iter()
            .zip(&self.stars)
            .any(|(g, stars)| glob_matches_at(g, *stars, name))
    }

    /// `text` with its secrets masked, and how many were. Text without secrets is returned
    /// as it came, without a copy.
    pub fn redact(&self, text: String) -> (String, u32) {
        self.redact_str(&text).unwrap_or((text, 0))
    }

    /// `text` with its secrets masked and how many were, or `None` (and no copy) when it has
    /// none.
    pub fn redact_str(&self, text: &str) -> Option<(String, u32)> {
        let found = self.find(text);
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut count = 0;
        for (start, end, kind) in found {
            if start < at {
                continue;
            }
            out.push_str(&text[at..start]);
            out.push_str("[REDACTED:");
            out.push_str(kind);
            out.push(']');
            at = end;
            count += 1;
        }
        out.push_str(&text[at..]);
        Some((out, count))
    }

    /// The secrets in `text`, in order. One pass over the bytes, a block of 32 at a time:
    /// each block is first tested, with no branch per byte (the compiler turns the test into
    /// vector compares), for a trigger byte next to the bytes its secret needs (an `A`
    /// before `K`, `S` or `I`; the `y` of `eyJ`; the `g` of `gh?_`; an `=` after a byte a
    /// secret name can end with…); only a block that passes is looked at closely.
    ///
    /// The component build (wasm32 without `simd128`) has no vector compares, so there the
    /// block test would cost more than it saves: it looks at every trigger byte instead.
    pub fn find(&self, text: &str) -> Vec<Hit> {
        self.find_in(text, !cfg!(target_arch = "wasm32"))
    }

    /// [`find`](Self::find), with the block test or without (the component's way, and the
    /// tests' reference).
    fn find_in(&self, text: &str, blocks: bool) -> Vec<Hit> {
        let bytes = text.as_bytes();
        let mut found: Vec<Hit> = Vec::new();
        let mut i = 0;
        let n = bytes.len();
        while i < n {
            // The first bytes and the last ones lack the neighbours the block test reads:
            // they are looked at closely.
            if blocks && i >= BEHIND && i + BLOCK + AHEAD <= n {
                let mut window = [0u8; WINDOW];
                window.copy_from_slice(&bytes[i - BEHIND..i - BEHIND + WINDOW]);
                if !self.block_may_hold_secret(&window) {
                    i += BLOCK;
                    continue;
                }
            }
            let end = if blocks { (i + BLOCK).min(n) } else { n };
            while i < end {
                match self.next_in(text, i, end) {
                    Ok((at, Some(h))) => {
                        i = h.1.max(at + 1);
                        found.push(h);
                    }
                    Ok((at, None)) => i = at + 1,
                    Err(past) => i = past,
                }
            }
        }
        found
    }

    /// Whether a secret's trigger byte may be among the [`BLOCK`] bytes after the first
    /// [`BEHIND`] of `w`. Never false where the close look would find a secret starting at
    /// (or, for `_`, `-` and `=`, triggered at) one of them: each term is implied by the check
    /// of its kind.
    #[inline(always)]
    fn block_may_hold_secret(&self, w: &[u8; WINDOW]) -> bool {
        let (ends, any_end) = match self.name_ends {
            Some(ends) => (ends, false),
            None => ([0; 4], true),
        };
        let mut any = false;
        for j in BEHIND..BEHIND + BLOCK {
            let c = w[j];
            let (prev, next) = (w[j - 1], w[j + 1]);
            let lower = prev | 0x20;
            let name_end = any_end
                | (lower == ends[0])
                | (lower == ends[1])
                | (lower == ends[2])
                | (lower == ends[3]);
            let hit = ((c == b'=') & name_end)
                | ((c == b'A') & ((next == b'K') | (next == b'S') | (next == b'I')))
                | ((c == b'J') & (prev == b'y'))
                | ((c == b'-') & ((next == b'-') | (w[j - 5] == b'g') | (w[j - 4] == b'x')))
                | ((c == b'_') & ((w[j - 3] == b'g') | (w[j - 10] == b'g')));
            any |= hit;
        }
        any
    }

    /// The first trigger byte in `i..end` and the secret it starts, if any (`Ok`), or the
    /// position after the bytes passed over when there was no trigger (`Err`).
    #[inline(always)]
    fn next_in(&self, text: &str, mut i: usize, end: usize) -> Result<(usize, Option<Hit>), usize> {
        let bytes = text.as_bytes();
        while i + CHUNK <= end {
            let mut word = [0u8; CHUNK];
            word.copy_from_slice(&bytes[i..i + CHUNK]);
            if has_trigger(u64::from_le_bytes(word)) {
                break;
            }
            i += CHUNK;
        }
        // A trigger byte among the next few: go straight to it.
        let stop = (i + CHUNK).min(end);
        match bytes[i..stop].iter().position(|b| TRIGGER[usize::from(*b)]) {
            Some(k) => i += k,
            None => return Err(stop),
        }
        {
            let b = bytes[i];
            let hit = match b {
                b'=' => self.name_value(bytes, i),
                b'-' => dash(text, i),
                b'_' => underscore(bytes, i),
                b'A' => starting_at(bytes, i, AT_A),
                _ => jwt(bytes, i),
            };
            Ok((i, hit))
        }
    }

    /// `NAME=value` with the `=` at `eq`: the value's range.
    fn name_value(&self, bytes: &[u8], eq: usize) -> Option<Hit> {
        let name_len = bytes[..eq]
            .iter()
            .rev()
            .take_while(|b| is_word(**b))
            .count();
        if name_len == 0 || !self.secret_name(&bytes[eq - name_len..eq]) {
            return None;
        }
        let v = eq + 1;
        let end = match bytes.get(v) {
            Some(q @ (b'"' | b'\'')) => {
                let close = bytes[v + 1..]
                    .iter()
                    .position(|b| b == q || *b == b'\n')
                    .map_or(bytes.len(), |p| v + 1 + p);
                if bytes.get(close) == Some(q) {
                    close + 1
                } else {
                    close
                }
            }
            _ => {
                v + run(bytes, v, |b| {
                    !b.is_ascii_whitespace() && b != b'"' && b != b'\''
                })
            }
        };
        (end > v && !bytes[v..end].starts_with(b"[REDACTED")).then_some((v, end, "secret"))
    }
}

/// A PEM private-key block starting at `at`.
fn pem(text: &str, at: usize) -> Option<Hit> {
    let rest = &text[at..];
    if !rest.starts_with("-----BEGIN ") {
        return None;
    }
    let line_end = rest.find('\n').unwrap_or(rest.len());
    if !rest[..line_end].contains("PRIVATE KEY-----") {
        return None;
    }
    let Some(e) = rest[line_end..].find("-----END ") else {
        return Some((at, text.len(), "private-key"));
    };
    let end_start = line_end + e + 9;
    let end = rest[end_start..]
        .find("-----")
        .map_or(rest.len(), |k| end_start + k + 5);
    Some((at, at + end, "private-key"))
}

/// A JWT whose `eyJ` ends at the `J` at `j`: three base64url segments, the first two JSON
/// objects.
fn jwt(bytes: &[u8], j: usize) -> Option<Hit> {
    let at = j.checked_sub(2)?;
    if &bytes[at..j] != b"ey" || !boundary_before(bytes, at) {
        return None;
    }
    let a = run(bytes, at, b64url);
    let dot1 = at + a;
    if a < 10 || bytes.get(dot1) != Some(&b'.') || !bytes[dot1 + 1..].starts_with(b"eyJ") {
        return None;
    }
    let b = run(bytes, dot1 + 1, b64url);
    let dot2 = dot1 + 1 + b;
    if b < 10 || bytes.get(dot2) != Some(&b'.') {
        return None;
    }
    let c = run(bytes, dot2 + 1, b64url);
    (c >= 10).then_some((at, dot2 + 1 + c, "jwt"))
}

/// At a `-`: a PEM block starting there, or a GitLab or Slack token whose prefix it ends.
/// The byte that would start each is compared first, so most dashes cost one or two loads.
fn dash(text: &str, i: usize) -> Option<Hit> {
    let bytes = text.as_bytes();
    if bytes.get(i + 1) == Some(&b'-') {
        return pem(text, i);
    }
    let starts = |back: usize, b: u8| i >= back && bytes[i - back] == b;
    if starts(5, b'g') || starts(4, b'x') {
        return ending_at(bytes, i, AT_DASH);
    }
    None
}

/// At a `_`: a GitHub token whose prefix it ends (`gh?_`, `github_pat_`).
fn underscore(bytes: &[u8], i: usize) -> Option<Hit> {
    let starts = |back: usize| i >= back && bytes[i - back] == b'g';
    if starts(3) || starts(10) {
        return ending_at(bytes, i, AT_UNDERSCORE);
    }
    None
}

/// The token of `table` whose prefix starts at `at`.
fn starting_at(bytes: &[u8], at: usize, table: &[Prefixed]) -> Option<Hit> {
    if !boundary_before(bytes, at) {
        return None;
    }
    table.iter().find_map(|p| token(bytes, at, p))
}

/// The token of `table` whose prefix ends with the byte at `last`.
fn ending_at(bytes: &[u8], last: usize, table: &[Prefixed]) -> Option<Hit> {
    table.iter().find_map(|p| {
        let at = (last + 1).checked_sub(p.prefix.len())?;
        if !boundary_before(bytes, at) {
            return None;
        }
        token(bytes, at, p)
    })
}

fn token(bytes: &[u8], at: usize, p: &Prefixed) -> Option<Hit> {
    if !bytes[at..].starts_with(p.prefix) {
        return None;
    }
    let body = at + p.prefix.len();
    let n = run(bytes, body, p.charset);
    let ok = n >= p.min && n <= p.max && !bytes.get(body + n).is_some_and(|b| is_word(*b));
    ok.then_some((at, body + n, p.kind))
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        world: "filter-plugin",
        path: "../../../wit/filter/v0.1.0",
    });

    use alloc::string::String;

    use exports::procwarden::filter::filter::Guest;
    use procwarden::filter::host;
    use procwarden::filter::types::{Context, Filtered};

    struct Redact;

    impl Guest for Redact {
        fn on_output(text: String, _ctx: Context) -> Filtered {
            let settings = host::config_keys()
                .into_iter()
                .filter_map(|k| host::config(&k).map(|v| (k, v)));
            let (text, redactions) = super::Redactor::from_settings(settings).redact(text);
            Filtered { text, redactions }
        }
    }

    export!(Redact);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> (String, u32) {
        Redactor::default().redact(text.to_owned())
    }

    #[test]
    fn masks_cloud_keys_and_tokens() {
        let (out, n) =
            r("key AKIAIOSFODNN7EXAMPLE and ghp_0123456789abcdefghijABCDEFGHIJ012345 end");
        assert_eq!(
            out,
            "key [REDACTED:aws-access-key] and [REDACTED:github-token] end"
        );
        assert_eq!(n, 2);
        let (out, _) = r("glpat-abcdefghij0123456789 xoxb-1234567890-abcdefghij");
        assert_eq!(out, "[REDACTED:gitlab-token] [REDACTED:slack-token]");
        let (out, _) = r("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz");
        assert_eq!(out, "[REDACTED:github-token]");
    }

    #[test]
    fn masks_jwts_and_private_keys() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let (out, n) = r(&format!("Authorization: Bearer {jwt}\n"));
        assert_eq!(out, "Authorization: Bearer [REDACTED:jwt]\n");
        assert_eq!(n, 1);
        let pem = "before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----\nafter";
        assert_eq!(r(pem).0, "before\n[REDACTED:private-key]\nafter");
        // A certificate is public: left alone.
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert_eq!(r(cert), (cert.to_owned(), 0));
    }

    #[test]
    fn masks_values_of_listed_names_only() {
        let (out, n) =
            r("GITHUB_TOKEN=abc123 PATH=/usr/bin DB_PASSWORD='p w' export API_KEY=\"k\"");
        assert_eq!(
            out,
            "GITHUB_TOKEN=[REDACTED:secret] PATH=/usr/bin DB_PASSWORD=[REDACTED:secret] export API_KEY=[REDACTED:secret]"
        );
        assert_eq!(n, 3);
        let custom = Redactor::new(["MY_*"]);
        assert_eq!(
            custom.redact("MY_THING=x OTHER_TOKEN=y".into()).0,
            "MY_THING=[REDACTED:secret] OTHER_TOKEN=y"
        );
    }

    #[test]
    fn leaves_shas_uuids_and_base64_alone() {
        for text in [
            "commit 3f786850e387550fdab836ed7e6dc881de23001b",
            "id 123e4567-e89b-12d3-a456-426614174000",
            "fixture: dGhpcyBpcyBhIHRlc3QgZml4dHVyZSBmb3IgYmFzZTY0IGRlY29kaW5n==",
            "blob QUtJQUlPU0ZPRE5ON0VYQU1QTEVBS0lBSU9TRk9ETk43RVhBTVBMRQ==",
            "xAKIAIOSFODNN7EXAMPLE is inside a word",
            "eyJhbGciOiJIUzI1NiJ9 alone is not a token",
            "token: none, TOKEN_COUNT=5 is a count, password field",
        ] {
            let (out, n) = r(text);
            // TOKEN_COUNT does not match `*_TOKEN` or `TOKEN`.
            assert_eq!((out.as_str(), n), (text, 0), "{text}");
        }
    }

    #[test]
    fn every_kind_is_found_next_to_others_and_at_the_edges() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let text = format!(
            "AKIAIOSFODNN7EXAMPLE\n{jwt} ASIAIOSFODNN7EXAMPLE,AIzaSyA-abcdefghijklmnopqrstuvwxyz01234 \
             gho_0123456789abcdefghijABCDEFGHIJ012345 xoxp-1234567890-abcdefghij API_TOKEN=v \
             glpat-abcdefghij0123456789"
        );
        let (out, n) = r(&text);
        assert_eq!(
            out,
            "[REDACTED:aws-access-key]\n[REDACTED:jwt] [REDACTED:aws-access-key],[REDACTED:google-api-key] \
             [REDACTED:github-token] [REDACTED:slack-token] API_TOKEN=[REDACTED:secret] \
             [REDACTED:gitlab-token]"
        );
        assert_eq!(n, 8);
        // Too short, or run on into a word: not a token.
        for text in [
            "AKIAIOSFODNN7EXAMPL",
            "AKIAIOSFODNN7EXAMPLEX",
            "ghp_short",
            "my_ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "glpat-short",
            "xoxq-1234567890-abcdefghij",
            "API_TOKEN=",
        ] {
            assert_eq!(r(text), (text.to_owned(), 0), "{text}");
        }
    }

    #[test]
    fn settings_give_the_names_list_or_the_default() {
        let text = "MY_THING=x API_TOKEN=y";
        let custom = Redactor::from_settings([("names.0", "MY_*"), ("other", "ignored")]);
        assert_eq!(
            custom.redact_str(text),
            Some(("MY_THING=[REDACTED:secret] API_TOKEN=y".into(), 1))
        );
        // No `names.N` key (or `names` given as a plain string): the default list.
        for settings in [&[][..], &[("names", "MY_*")][..]] {
            let redactor = Redactor::from_settings(settings.iter().copied());
            assert_eq!(
                redactor.redact_str(text),
                Some(("MY_THING=x API_TOKEN=[REDACTED:secret]".into(), 1))
            );
        }
        assert_eq!(Redactor::default().redact_str("clean"), None);
    }

    #[test]
    fn the_block_test_passes_over_no_secret() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let secrets = [
            "AKIAIOSFODNN7EXAMPLE",
            "ASIAIOSFODNN7EXAMPLE",
            "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "glpat-abcdefghij0123456789",
            "xoxs-1234567890-abcdefghij",
            jwt,
            "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----",
            "API_TOKEN=v",
            "db_password=\"p w\"",
            "MY_THING=x",
        ];
        // Filler full of trigger bytes that start nothing.
        let filler = "RUST_LOG=info a-b x_y AA== eyJ ";
        let redactors = [
            Redactor::default(),
            Redactor::new(["MY_*", "*_PASSWORD"]),
            Redactor::new(["*"]),
            Redactor::new(["A", "B", "C", "D", "E"]),
        ];
        let mut found = 0;
        for secret in secrets {
            for before in 0..48 {
                let mut text = filler.repeat(3)[..before].to_owned();
                text.push_str(secret);
                text.push_str(&filler.repeat(3));
                for cut in [text.len(), before + secret.len(), before + secret.len() + 7] {
                    let text = &text[..cut];
                    for r in &redactors {
                        let hits = r.find(text);
                        assert_eq!(hits, r.find_in(text, false), "{text:?}");
                        found += hits.len();
                    }
                }
            }
        }
        assert!(found > 1000, "{found}");
    }

    #[test]
    fn name_ends_lists_the_literal_last_bytes() {
        assert_eq!(
            name_ends(DEFAULT_NAMES.iter().map(|g| g.as_bytes())),
            Some([b'n', b't', b'y', b'd'])
        );
        assert_eq!(name_ends([&b"MY_*"[..]].into_iter()), None);
        assert_eq!(
            name_ends([&b"x_a"[..], b"B", b""].into_iter()),
            Some([b'a', b'b', b'a', b'a'])
        );
        assert_eq!(
            name_ends([&b"a"[..], b"b", b"c", b"d", b"e"].into_iter()),
            None
        );
    }

    #[test]
    fn name_globs_match_case_insensitively_in_place() {
        assert!(glob_matches("*_TOKEN", b"github_token"));
        assert!(glob_matches("PASSWORD", b"password"));
        assert!(!glob_matches("PASSWORD", b"PASSWORDS"));
        assert!(glob_matches("A*B*C", b"AxxBxxC"));
        assert!(!glob_matches("A*B*C", b"AxxC"));
        assert!(!glob_matches("*_TOKEN", b"_TOKE"));
        assert!(glob_matches("*", b"ANY"));
    }

    #[test]
    fn a_32_kib_read_is_fast() {
        let line = "test tests::passes_42 ... ok (3f786850e387550fdab836ed7e6dc881de23001b)\n";
        let text: String = line.repeat(32 * 1024 / line.len());
        let redactor = Redactor::default();
        let start = std::time::Instant::now();
        for _ in 0..100 {
            std::hint::black_box(redactor.find(std::hint::black_box(&text)));
        }
        let per = start.elapsed() / 100;
        let start = std::time::Instant::now();
        for _ in 0..100 {
            std::hint::black_box(std::hint::black_box(&text).to_owned());
        }
        let copy = start.elapsed() / 100;
        eprintln!("redact: {per:?} per 32 KiB; copying it: {copy:?}");
    }
}
