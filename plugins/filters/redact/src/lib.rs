//! `redact` (procwarden:filter@0.1.0): masks secrets in process output before it reaches a
//! client: cloud access keys (AWS `AKIA…`/`ASIA…`, Google `AIza…`), GitHub (`ghp_…`,
//! `github_pat_…`), GitLab (`glpat-…`) and Slack (`xox?-…`) tokens, JWTs, PEM private-key
//! blocks, and the value of `NAME=value` where NAME matches a configurable list.
//!
//! Each match becomes `[REDACTED:kind]` (for `NAME=value`, only the value is replaced), and
//! the number of replacements is reported. Scanners are hand-written around literal anchors
//! (no regular-expression engine), so a 32 KiB read is scanned in microseconds; each anchor
//! needs a word boundary before it and a minimum length after it, which keeps git SHAs,
//! UUIDs and base64 blobs untouched.
//!
//! Settings: `names` (a list of globs, `*` matching any run of letters, digits and `_`,
//! compared case-insensitively); default [`DEFAULT_NAMES`].
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

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

/// A `NAME` glob, uppercased.
#[derive(Debug, Clone)]
pub struct NameGlob(Vec<String>);

impl NameGlob {
    pub fn new(glob: &str) -> Self {
        Self(
            glob.to_ascii_uppercase()
                .split('*')
                .map(str::to_owned)
                .collect(),
        )
    }

    /// Whether `name` (uppercased) matches: the literal parts in order, the first at the
    /// start and the last at the end.
    pub fn matches(&self, name: &str) -> bool {
        let parts = &self.0;
        if parts.len() == 1 {
            return name == parts[0];
        }
        let (first, last) = (&parts[0], &parts[parts.len() - 1]);
        if !name.starts_with(first.as_str()) || name.len() < first.len() + last.len() {
            return false;
        }
        let mut rest = &name[first.len()..name.len() - last.len()];
        if !name.ends_with(last.as_str()) {
            return false;
        }
        for mid in &parts[1..parts.len() - 1] {
            match rest.find(mid.as_str()) {
                Some(i) => rest = &rest[i + mid.len()..],
                None => return false,
            }
        }
        true
    }
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

/// A token that starts with a literal prefix.
struct Prefixed {
    prefix: &'static str,
    kind: &'static str,
    min: usize,
    max: usize,
    charset: fn(u8) -> bool,
}

const PREFIXED: &[Prefixed] = &[
    Prefixed {
        prefix: "AKIA",
        kind: "aws-access-key",
        min: 16,
        max: 16,
        charset: |b| b.is_ascii_uppercase() || b.is_ascii_digit(),
    },
    Prefixed {
        prefix: "ASIA",
        kind: "aws-access-key",
        min: 16,
        max: 16,
        charset: |b| b.is_ascii_uppercase() || b.is_ascii_digit(),
    },
    Prefixed {
        prefix: "AIza",
        kind: "google-api-key",
        min: 35,
        max: 35,
        charset: b64url,
    },
    Prefixed {
        prefix: "ghp_",
        kind: "github-token",
        min: 36,
        max: 255,
        charset: |b| b.is_ascii_alphanumeric(),
    },
    Prefixed {
        prefix: "gho_",
        kind: "github-token",
        min: 36,
        max: 255,
        charset: |b| b.is_ascii_alphanumeric(),
    },
    Prefixed {
        prefix: "ghu_",
        kind: "github-token",
        min: 36,
        max: 255,
        charset: |b| b.is_ascii_alphanumeric(),
    },
    Prefixed {
        prefix: "ghs_",
        kind: "github-token",
        min: 36,
        max: 255,
        charset: |b| b.is_ascii_alphanumeric(),
    },
    Prefixed {
        prefix: "ghr_",
        kind: "github-token",
        min: 36,
        max: 255,
        charset: |b| b.is_ascii_alphanumeric(),
    },
    Prefixed {
        prefix: "github_pat_",
        kind: "github-token",
        min: 22,
        max: 255,
        charset: is_word,
    },
    Prefixed {
        prefix: "glpat-",
        kind: "gitlab-token",
        min: 20,
        max: 255,
        charset: b64url,
    },
    Prefixed {
        prefix: "xoxb-",
        kind: "slack-token",
        min: 10,
        max: 255,
        charset: |b| b.is_ascii_alphanumeric() || b == b'-',
    },
    Prefixed {
        prefix: "xoxp-",
        kind: "slack-token",
        min: 10,
        max: 255,
        charset: |b| b.is_ascii_alphanumeric() || b == b'-',
    },
    Prefixed {
        prefix: "xoxa-",
        kind: "slack-token",
        min: 10,
        max: 255,
        charset: |b| b.is_ascii_alphanumeric() || b == b'-',
    },
    Prefixed {
        prefix: "xoxr-",
        kind: "slack-token",
        min: 10,
        max: 255,
        charset: |b| b.is_ascii_alphanumeric() || b == b'-',
    },
    Prefixed {
        prefix: "xoxs-",
        kind: "slack-token",
        min: 10,
        max: 255,
        charset: |b| b.is_ascii_alphanumeric() || b == b'-',
    },
];

/// The redactor: the `NAME` globs it masks values of.
pub struct Redactor {
    names: Vec<NameGlob>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(DEFAULT_NAMES.iter().copied())
    }
}

impl Redactor {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            names: names.into_iter().map(NameGlob::new).collect(),
        }
    }

    fn secret_name(&self, name: &str) -> bool {
        let upper = name.to_ascii_uppercase();
        self.names.iter().any(|g| g.matches(&upper))
    }

    /// `text` with its secrets masked, and how many were. One pass over the bytes: only the
    /// few bytes that can start a secret (`=`, `-` and the first letters of the prefixes)
    /// are looked at more closely.
    pub fn redact(&self, text: &str) -> (String, u32) {
        let bytes = text.as_bytes();
        let mut found: Vec<(usize, usize, &'static str)> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if !TRIGGER[usize::from(b)] {
                i += 1;
                continue;
            }
            let hit = match b {
                b'=' => self.name_value(text, i),
                b'-' => pem(text, i),
                b'e' => jwt(bytes, i),
                _ => prefixed(bytes, i),
            };
            match hit {
                Some(h) => {
                    i = h.1.max(i + 1);
                    found.push(h);
                }
                None => i += 1,
            }
        }
        if found.is_empty() {
            return (text.to_owned(), 0);
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
        (out, count)
    }

    /// `NAME=value` with the `=` at `eq`: the value's range.
    fn name_value(&self, text: &str, eq: usize) -> Option<(usize, usize, &'static str)> {
        let bytes = text.as_bytes();
        let name_len = bytes[..eq]
            .iter()
            .rev()
            .take_while(|b| is_word(**b))
            .count();
        if name_len == 0 || !self.secret_name(&text[eq - name_len..eq]) {
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
        (end > v && !text[v..end].starts_with("[REDACTED")).then_some((v, end, "secret"))
    }
}

/// Bytes that can start a secret.
static TRIGGER: [bool; 256] = {
    let mut t = [false; 256];
    let mut k = 0;
    let starts = b"=-eAgx";
    while k < starts.len() {
        t[starts[k] as usize] = true;
        k += 1;
    }
    t
};

/// A PEM private-key block starting at `at`.
fn pem(text: &str, at: usize) -> Option<(usize, usize, &'static str)> {
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

/// A JWT at `at`: three base64url segments, the first two JSON objects (`eyJ`).
fn jwt(bytes: &[u8], at: usize) -> Option<(usize, usize, &'static str)> {
    if !bytes[at..].starts_with(b"eyJ") || !boundary_before(bytes, at) {
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

/// A prefixed token at `at`.
fn prefixed(bytes: &[u8], at: usize) -> Option<(usize, usize, &'static str)> {
    if !boundary_before(bytes, at) {
        return None;
    }
    PREFIXED.iter().find_map(|p| {
        if !bytes[at..].starts_with(p.prefix.as_bytes()) {
            return None;
        }
        let body = at + p.prefix.len();
        let n = run(bytes, body, p.charset);
        let ok = n >= p.min && n <= p.max && !bytes.get(body + n).is_some_and(|b| is_word(*b));
        ok.then_some((at, body + n, p.kind))
    })
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        world: "filter-plugin",
        path: "../../../wit/filter/v0.1.0",
    });

    use exports::procwarden::filter::filter::Guest;
    use procwarden::filter::host;
    use procwarden::filter::types::{Context, Filtered};

    struct Redact;

    impl Guest for Redact {
        fn on_output(text: String, _ctx: Context) -> Filtered {
            let names: Vec<String> = host::config_keys()
                .iter()
                .filter(|k| k.starts_with("names."))
                .filter_map(|k| host::config(k))
                .collect();
            let redactor = if names.is_empty() {
                super::Redactor::default()
            } else {
                super::Redactor::new(names.iter().map(String::as_str))
            };
            let (text, redactions) = redactor.redact(&text);
            Filtered { text, redactions }
        }
    }

    export!(Redact);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> (String, u32) {
        Redactor::default().redact(text)
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
            custom.redact("MY_THING=x OTHER_TOKEN=y").0,
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
    fn a_32_kib_read_is_fast() {
        let line = "test tests::passes_42 ... ok (3f786850e387550fdab836ed7e6dc881de23001b)\n";
        let text: String = line.repeat(32 * 1024 / line.len());
        let redactor = Redactor::default();
        let start = std::time::Instant::now();
        for _ in 0..100 {
            std::hint::black_box(redactor.redact(std::hint::black_box(&text)));
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
