//! The interactive shell: rustyline with history, completion of command names, a hint with the
//! syntax of the command being typed, and `help [CMD]`. Lines are parsed by the same clap
//! definitions as the shell's arguments ([`crate::args::Line`]), so both agree on every command.
//!
//! A server that is down or restarts does not end the shell: the command fails with a clear
//! `(disconnected)` message and the next command connects again.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::{CommandFactory, Parser};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::args::{Conn, Line};
use crate::client::{Client, Failure};
use crate::output::Printer;

/// Every command with its syntax, from the clap definitions (so they cannot drift).
pub fn syntax_table() -> Vec<(String, Vec<String>, String)> {
    let mut line = Line::command();
    // Built, so that every argument's arity is filled in.
    line.build();
    line.get_subcommands()
        .map(|sc| {
            let mut parts = Vec::new();
            for a in sc.get_positionals() {
                let name = a
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map_or_else(|| a.get_id().as_str().to_uppercase(), |v| v.to_string());
                let many = matches!(a.get_num_args(), Some(r) if r.max_values() > 1);
                let dots = if many { "..." } else { "" };
                parts.push(if a.is_required_set() {
                    format!("{name}{dots}")
                } else {
                    format!("[{name}{dots}]")
                });
            }
            for a in sc.get_arguments().filter(|a| !a.is_positional()) {
                if let Some(long) = a.get_long().filter(|l| *l != "help") {
                    let takes = a.get_num_args().is_some_and(|r| r.takes_values());
                    let value = a.get_value_names().and_then(|v| v.first()).map(|v| v.to_string());
                    parts.push(match (takes, value) {
                        (true, Some(v)) => format!("[--{long} {v}]"),
                        (true, None) => format!("[--{long} {}]", long.to_uppercase().replace('-', "_")),
                        (false, _) => format!("[--{long}]"),
                    });
                }
            }
            let about = sc.get_about().map(|a| a.to_string()).unwrap_or_default();
            (sc.get_name().to_string(), parts, about)
        })
        .collect()
}

struct ShellHelper {
    table: Vec<(String, Vec<String>, String)>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        if before.contains(char::is_whitespace) {
            // After `help `, complete command names too.
            if let Some(rest) = before.strip_prefix("help ") {
                let start = before.len() - rest.len();
                let c = self
                    .names()
                    .filter(|n| n.starts_with(rest))
                    .map(|n| Pair { display: n.clone(), replacement: n });
                return Ok((start, c.collect()));
            }
            return Ok((pos, Vec::new()));
        }
        let c = self
            .names()
            .filter(|n| n.starts_with(before))
            .map(|n| Pair { display: n.clone(), replacement: n });
        Ok((0, c.collect()))
    }
}

impl ShellHelper {
    fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.table.iter().map(|(n, ..)| n.clone()).chain(["help", "quit"].map(String::from))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _: &Context<'_>) -> Option<String> {
        if pos < line.len() || line.is_empty() {
            return None;
        }
        let words = crate::words::split(line).ok()?;
        let first = words.first()?;
        let trailing_space = line.ends_with(char::is_whitespace);
        if words.len() == 1 && !trailing_space {
            let (name, parts, _) = self.table.iter().find(|(n, ..)| n.starts_with(first.as_str()))?;
            return Some(format!("{} {}", &name[first.len()..], parts.join(" ")).trim_end().to_string());
        }
        let (_, parts, _) = self.table.iter().find(|(n, ..)| n == first)?;
        let typed = words.len() - 1;
        let rest: Vec<&str> = parts.iter().skip(typed).map(String::as_str).collect();
        if rest.is_empty() {
            return None;
        }
        Some(format!("{}{}", if trailing_space { "" } else { " " }, rest.join(" ")))
    }
}

impl Highlighter for ShellHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> std::borrow::Cow<'h, str> {
        std::borrow::Cow::Owned(format!("\x1b[90m{hint}\x1b[0m"))
    }
}

impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

/// The text of `help` (no command) or `help CMD`.
pub fn help(topic: Option<&str>) -> String {
    match topic {
        None => {
            let mut s = String::from("Commands (help CMD for details; quit or Ctrl-D leaves):\n");
            for (name, parts, about) in syntax_table() {
                s.push_str(&format!("  {name} {}\n      {about}\n", parts.join(" ")));
            }
            s.push_str(
                "Keys and values take backslash escapes (\\xNN, \\n, \\t, \\\\); quote words with spaces.\n",
            );
            s
        }
        Some(cmd) => match Line::command().find_subcommand_mut(cmd) {
            Some(sc) => sc.render_long_help().to_string(),
            None => format!("(usage) unknown command '{cmd}'; `help` lists them\n"),
        },
    }
}

/// Runs the shell until `quit` or end of input.
pub fn run(rt: &tokio::runtime::Runtime, conn: &Conn, printer: Printer) -> u8 {
    let helper = ShellHelper { table: syntax_table() };
    let mut editor: Editor<ShellHelper, rustyline::history::DefaultHistory> = match Editor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("nanodb-cli: cannot start the shell: {e}");
            return 2;
        }
    };
    editor.set_helper(Some(helper));
    let history = std::env::var_os("NANODB_CLI_HISTFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".nanodb_cli_history")));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut client: Option<Client> = match rt.block_on(Client::connect(conn)) {
        Ok(c) => Some(c),
        Err(f) => {
            eprintln!("{}; the next command tries again", f.message());
            None
        }
    };
    let prompt = format!("{}:{}> ", conn.host, conn.port);
    let mut last_code = 0;
    loop {
        let line = match editor.readline(&prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("nanodb-cli: {e}");
                break;
            }
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(trimmed);
        let words = match crate::words::split(trimmed) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("(usage) {e}");
                last_code = 2;
                continue;
            }
        };
        match words[0].as_str() {
            "quit" | "exit" => break,
            "help" => {
                print!("{}", help(words.get(1).map(String::as_str)));
                continue;
            }
            _ => {}
        }
        let args: Vec<OsString> = words.into_iter().map(|w| OsString::from_vec(w.into_bytes())).collect();
        let parsed = match Line::try_parse_from(args) {
            Ok(p) => p,
            Err(e) => {
                let unknown = e.kind() == clap::error::ErrorKind::InvalidSubcommand;
                let msg = e.render().to_string();
                if unknown {
                    eprintln!(
                        "(usage) unknown command '{}'; `help` lists them",
                        trimmed.split_whitespace().next().unwrap_or("")
                    );
                } else if e.use_stderr() {
                    eprint!("(usage) {}", msg.trim_start_matches("error: "));
                } else {
                    print!("{msg}");
                }
                last_code = 2;
                continue;
            }
        };
        if let crate::args::Cmd::Txn { compares, success, failure } = &parsed.command
            && compares.is_empty()
            && success.is_empty()
            && failure.is_empty()
        {
            {
                // The shell owns stdin: the parts must come as flags here.
                eprintln!("(usage) in the shell, give txn its parts as --compare, --success and --failure");
                last_code = 2;
                continue;
            }
        }
        last_code = rt.block_on(async {
            let c = match client.as_mut() {
                Some(c) => c,
                None => match Client::connect(conn).await {
                    Ok(c) => client.insert(c),
                    Err(f) => {
                        eprintln!("{}", f.message());
                        return f.exit_code();
                    }
                },
            };
            let interrupt = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let mut stdout = std::io::stdout();
            match crate::run::run(c, conn, &parsed.command, printer, &mut stdout, interrupt).await {
                Ok(()) => 0,
                Err(f) => {
                    eprintln!("{}", f.message());
                    if matches!(f, Failure::Connect(_)) {
                        client = None;
                    }
                    f.exit_code()
                }
            }
        });
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    last_code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_comes_from_the_clap_definitions() {
        let table = syntax_table();
        let put = table.iter().find(|(n, ..)| n == "put").expect("put");
        assert_eq!(put.1[..2], ["KEY".to_string(), "[VALUE]".to_string()]);
        assert!(put.1.contains(&"[--ttl TTL]".to_string()), "{:?}", put.1);
        assert!(put.1.contains(&"[--if-absent]".to_string()), "{:?}", put.1);
        let del = table.iter().find(|(n, ..)| n == "del").expect("del");
        assert_eq!(del.1, ["KEYS..."]);
    }

    #[test]
    fn hints_show_what_is_left_to_type() {
        let h = ShellHelper { table: syntax_table() };
        let history = rustyline::history::DefaultHistory::new();
        let ctx = Context::new(&history);
        assert_eq!(h.hint("hge", 3, &ctx).as_deref(), Some("t KEY FIELD"));
        assert_eq!(h.hint("hget k", 6, &ctx).as_deref(), Some(" FIELD"));
        assert_eq!(h.hint("hget k ", 7, &ctx).as_deref(), Some("FIELD"));
        assert_eq!(h.hint("hget k f", 8, &ctx), None);
        assert_eq!(h.hint("nosuch", 6, &ctx), None);
        let (start, c) = h.complete("hg", 2, &ctx).expect("complete");
        assert_eq!(start, 0);
        let names: Vec<_> = c.iter().map(|p| p.replacement.as_str()).collect();
        assert_eq!(names, ["hget", "hgetall"]);
    }

    #[test]
    fn help_lists_and_explains() {
        assert!(help(None).contains("put KEY [VALUE]"));
        assert!(help(Some("put")).contains("--if-version"));
        assert!(help(Some("nosuch")).contains("unknown command 'nosuch'"));
    }
}
