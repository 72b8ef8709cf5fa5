//! The man pages and `--help` must not drift: every option and subcommand that `--help`
//! shows, for every (sub)command, appears in the man page of its group.
use std::collections::BTreeSet;
use std::process::Command;

fn help(path: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_codex"))
        .args(path)
        .arg("--help")
        .env_clear()
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "codex {path:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Names listed in a section ("Options:" or "Commands:") of argh's help.
fn section(help: &str, title: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if !line.starts_with(' ') {
            inside = line.trim() == title;
            continue;
        }
        // Entries start two spaces in; continuation lines are indented further.
        if inside && line.len() > 2 && !line[2..].starts_with(' ') {
            for word in line.split_whitespace().take(3) {
                let w = word.trim_end_matches(',');
                if title == "Commands:" {
                    names.push(w.to_string());
                    break;
                } else if w.starts_with('-') {
                    names.push(w.to_string());
                }
            }
        }
    }
    names
}

fn man_page(path: &[String]) -> (String, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let name = path
        .first()
        .map(|g| format!("codex-{g}.1"))
        .filter(|n| std::path::Path::new(root).join("man").join(n).exists())
        .unwrap_or_else(|| "codex.1".to_string());
    let text = std::fs::read_to_string(format!("{root}/man/{name}")).unwrap();
    // roff escapes a dash as \- ; fold it back.
    (name, text.replace("\\-", "-").replace("\\e", "\\"))
}

fn contains_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let after = text[i + word.len()..].chars().next();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[test]
fn every_help_option_and_command_is_in_its_man_page() {
    let mut todo = vec![Vec::<String>::new()];
    let mut seen = BTreeSet::new();
    let mut missing = Vec::new();
    while let Some(path) = todo.pop() {
        let h = help(&path);
        let (page, man) = man_page(&path);
        for opt in section(&h, "Options:") {
            if !contains_word(&man, &opt) {
                missing.push(format!(
                    "{page}: option {opt} of `codex {}`",
                    path.join(" ")
                ));
            }
        }
        for cmd in section(&h, "Commands:") {
            if cmd == "help" {
                continue;
            }
            let mut sub = path.clone();
            sub.push(cmd.clone());
            let (sub_page, sub_man) = man_page(&sub);
            if !contains_word(&man, &cmd) && !contains_word(&sub_man, &cmd) {
                missing.push(format!("{page}/{sub_page}: command {cmd}"));
            }
            if seen.insert(sub.clone()) {
                todo.push(sub);
            }
        }
    }
    assert!(seen.len() >= 8, "walked too few commands: {seen:?}");
    assert!(
        missing.is_empty(),
        "missing from man pages:\n{}",
        missing.join("\n")
    );
}

#[test]
fn man_pages_document_exit_codes_and_environment() {
    let root = env!("CARGO_MANIFEST_DIR");
    let main = std::fs::read_to_string(format!("{root}/man/codex.1")).unwrap();
    for needle in [
        "EXIT STATUS",
        ".B 0",
        ".B 1",
        ".B 2",
        ".B 3",
        ".B 4",
        ".B 5",
        "CODEX_DATA_DIR",
        "CODEX_CONFIG_FILE",
        "CODEX_STORAGE_QUOTA",
        "CODEX_LOG_LEVEL",
        "CODEX_LOG_FORMAT",
        "EXAMPLES",
        "jq",
    ] {
        assert!(main.contains(needle), "codex.1 lacks {needle}");
    }
    for page in [
        "codex-availability.1",
        "codex-reservation.1",
        "codex-run.1",
        "codex-queue.1",
        "codex-sale.1",
        "codex-status.1",
    ] {
        let t = std::fs::read_to_string(format!("{root}/man/{page}")).unwrap();
        for needle in ["EXIT STATUS", "ENVIRONMENT", "EXAMPLES", "| jq"] {
            assert!(t.contains(needle), "{page} lacks {needle}");
        }
    }
}
