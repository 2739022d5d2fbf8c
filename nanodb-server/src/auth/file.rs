//! The users file (`--users-file`): one `user NAME rules...` line per user, `#` comments and
//! blank lines allowed. Parsing names the line of the first error (`FILE:LINE: reason`); saving
//! writes every user as rules that rebuild it, atomically (temp file, fsync, rename, fsync of the
//! directory), with passwords only as `#<sha256>`.

use std::io::Write as _;
use std::path::Path;

use super::rules::User;

/// The largest users file read (a guard against pointing `--users-file` at something huge).
pub const MAX_FILE_LEN: u64 = 16 << 20;

/// Parses the text of a users file; errors are `LINE: reason` (the caller adds the file name).
pub fn parse(text: &str) -> Result<Vec<User>, (usize, String)> {
    let mut users: Vec<User> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        if words.next() != Some("user") {
            return Err((n, "a line must start with 'user' (user NAME rules...)".into()));
        }
        let Some(name) = words.next() else {
            return Err((n, "'user' needs a name".into()));
        };
        if users.iter().any(|u| u.name == name) {
            return Err((n, format!("user '{name}' is defined twice")));
        }
        let mut user = User::new(name);
        for rule in words {
            user.apply(rule).map_err(|e| (n, format!("user '{name}': {e}")))?;
        }
        users.push(user);
    }
    Ok(users)
}

/// Reads and parses `path`; the error is one line, `PATH:LINE: reason` (or `PATH: reason`).
pub fn load(path: &Path) -> Result<Vec<User>, String> {
    let shown = path.display();
    let len = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?.len();
    if len > MAX_FILE_LEN {
        return Err(format!("{shown}: {len} bytes; a users file is at most {MAX_FILE_LEN} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    parse(&text).map_err(|(line, why)| format!("{shown}:{line}: {why}"))
}

/// The file's text for `users`.
pub fn render<'a>(users: impl IntoIterator<Item = &'a User>) -> String {
    let mut text = String::from("# NanoDB users (written by ACL SAVE)\n");
    for u in users {
        text.push_str(&u.describe());
        text.push('\n');
    }
    text
}

/// Replaces `path` with `text` atomically: a crash leaves the old file or the new one, whole.
pub fn save(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        set_private(&f)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Password digests are not for everyone's eyes: the file is readable by its owner only.
#[cfg(unix)]
fn set_private(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_private(_: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rules::{Category, digest_of, hex};

    #[test]
    fn every_rule_parses() {
        let text = format!(
            "# comment\n\n  user alice on >secret ~app:* %R~shared:* %W~logs:* &news:* +@read +@write\n\
             user bob off #{} allkeys allchannels +@all -@admin\n\
             user carol on nopass resetkeys resetchannels +@pubsub +@connection\n\
             user dave on >x resetpass >y <y >z reset on\n",
            hex(&digest_of(b"pw"))
        );
        let users = parse(&text).expect("parses");
        assert_eq!(users.len(), 4);
        let alice = &users[0];
        assert!(alice.enabled && alice.accepts(b"secret") && !alice.accepts(b"x"));
        assert!(alice.key_allowed(b"app:1", true) && !alice.key_allowed(b"shared:1", true));
        assert!(alice.key_allowed(b"logs:1", true) && !alice.key_allowed(b"logs:1", false));
        assert!(alice.channel_allowed(b"news:a") && alice.allows(Category::Write));
        let bob = &users[1];
        assert!(!bob.enabled && !bob.accepts(b"pw"));
        assert!(bob.allows(Category::Read) && !bob.allows(Category::Admin));
        assert!(bob.key_allowed(b"anything", true) && bob.channel_allowed(b"any"));
        let carol = &users[2];
        assert!(carol.accepts(b"") && carol.allows(Category::PubSub) && !carol.allows(Category::Read));
        let dave = &users[3];
        assert!(dave.enabled && dave.passwords.is_empty() && dave.categories == 0);
    }

    #[test]
    fn errors_name_their_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("user a on\nnope b\n", 2, "must start with 'user'"),
            ("\n\n#c\nuser\n", 4, "needs a name"),
            ("user a on\nuser a off\n", 2, "defined twice"),
            ("user a +@nosuch\n", 1, "unknown category"),
            ("user a on\n\nuser b #12\n", 3, "64 hexadecimal"),
            ("user a %Q~x\n", 1, "R, W or RW"),
            ("user a %Rx\n", 1, "%R~glob"),
            ("user a +get\n", 1, "single commands"),
            ("user a <pw\n", 1, "no such password"),
            ("user a frobnicate\n", 1, "unknown rule"),
        ];
        for (text, line, why) in cases {
            let (n, msg) = parse(text).expect_err(text);
            assert_eq!(n, *line, "{text}: {msg}");
            assert!(msg.contains(why), "{text}: {msg}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.acl");
        std::fs::write(&path, "user a on\nuser b bogus\n").expect("write");
        let e = load(&path).expect_err("bad file");
        assert!(e.starts_with(&format!("{}:2: user 'b': 'bogus'", path.display())), "{e}");
        let missing = load(&dir.path().join("missing")).expect_err("missing");
        assert!(missing.contains("missing"), "{missing}");
    }

    #[test]
    fn save_then_load_is_the_same_users() {
        let users = parse("user a on >pw ~k:* &c +@read\nuser default on nopass allkeys allchannels +@all\n")
            .expect("parses");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.acl");
        save(&path, &render(&users)).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(">pw") && !text.contains(" pw"), "no plaintext password: {text}");
        assert_eq!(load(&path).expect("load"), users);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }
}
