//! Redis's glob patterns (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), shared by KEYS, SCAN MATCH,
//! CONFIG GET and pattern subscriptions (PSUBSCRIBE, PUBSUB CHANNELS).

/// Redis's glob match (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), used by KEYS, SCAN MATCH and CONFIG GET.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Backtracking point for the last '*': (pattern index after it, string index it covers to).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p + 1, i));
                    p += 1;
                    continue;
                }
                b'?' if i < s.len() => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' if i < s.len() => {
                    if let Some((matched, next)) = class_match(pattern, p, s[i])
                        && matched
                    {
                        p = next;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && i < s.len() && pattern[p + 1] == s[i] => {
                    p += 2;
                    i += 1;
                    continue;
                }
                c if c != b'*' && c != b'?' && c != b'[' && c != b'\\' && i < s.len() && c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'\\' if p + 1 == pattern.len() && i < s.len() && s[i] == b'\\' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        } else if i == s.len() {
            return true;
        }
        match star {
            Some((sp, si)) if si < s.len() => {
                star = Some((sp, si + 1));
                p = sp;
                i = si + 1;
            }
            _ => return false,
        }
    }
}

/// Matches `c` against the class starting at `pattern[p] == '['`; (matched, index after `]`).
fn class_match(pattern: &[u8], p: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    while j < pattern.len() && pattern[j] != b']' {
        if pattern[j] == b'\\' && j + 1 < pattern.len() {
            matched |= pattern[j + 1] == c;
            j += 2;
        } else if j + 2 < pattern.len() && pattern[j + 1] == b'-' && pattern[j + 2] != b']' {
            let (a, b) = (pattern[j].min(pattern[j + 2]), pattern[j].max(pattern[j + 2]));
            matched |= (a..=b).contains(&c);
            j += 3;
        } else {
            matched |= pattern[j] == c;
            j += 1;
        }
    }
    if j >= pattern.len() {
        return None; // unterminated class: '[' is then literal-less, as no match
    }
    Some((matched != negate, j + 1))
}

/// The literal prefix of a glob pattern: what every match must start with.
pub fn glob_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern.iter().position(|c| matches!(c, b'*' | b'?' | b'[' | b'\\')).unwrap_or(pattern.len());
    &pattern[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_redis() {
        let yes: &[(&str, &str)] = &[
            ("*", ""),
            ("*", "abc"),
            ("a*", "abc"),
            ("*c", "abc"),
            ("a?c", "abc"),
            ("h[ae]llo", "hello"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("a\\*", "a*"),
            ("user:*:name", "user:42:name"),
            ("*a*b", "xxaxxb"),
        ];
        for (p, s) in yes {
            assert!(glob_match(p.as_bytes(), s.as_bytes()), "{p} ~ {s}");
        }
        let no: &[(&str, &str)] = &[
            ("a*", "bac"),
            ("a?c", "ac"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("a\\*", "ab"),
            ("abc", "abcd"),
            ("*a*b", "xxaxxbc"),
        ];
        for (p, s) in no {
            assert!(!glob_match(p.as_bytes(), s.as_bytes()), "{p} !~ {s}");
        }
        assert_eq!(glob_prefix(b"user:*"), b"user:");
        assert_eq!(glob_prefix(b"*"), b"");
    }
}
