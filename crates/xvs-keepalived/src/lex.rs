//! keepalived.conf's lexical layer: files and `include`, comments, quotes,
//! line continuations, and braces, into a tree of [`Node`]s.
//!
//! As keepalived's `read_line`/`alloc_strvec` do: `#` and `!` start a comment
//! anywhere outside quotes (`\#`, `\!` are literal), a trailing `\` continues
//! the line, `"..."` keeps whitespace and braces, `{` and `}` are tokens of
//! their own even when attached to a word, and a block's `{` may open on the
//! keyword's line or on the next one. `include` (and `includer`, `includem`,
//! `includew`, `includeb`, `includea`) takes a path or a glob, relative to the
//! directory of the including file.

use crate::{ConfError, Loc};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How deep includes may nest (an include cycle ends here).
const MAX_INCLUDE_DEPTH: usize = 32;
/// Largest configuration file read.
const MAX_FILE: u64 = 16 << 20;

/// A statement: its words and, for a block, its children.
#[derive(Debug, Clone)]
pub struct Node {
    pub loc: Loc,
    pub words: Vec<String>,
    pub children: Option<Vec<Node>>,
}

impl Node {
    /// The keyword (first word).
    pub fn key(&self) -> &str {
        &self.words[0]
    }

    /// The arguments after the keyword.
    pub fn args(&self) -> &[String] {
        &self.words[1..]
    }
}

#[derive(Debug, Clone)]
enum Tok {
    Word(String, Loc),
    Open(Loc),
    Close(Loc),
    Eol,
}

/// Reads `path` (and everything it includes) into statements.
pub fn read(path: &Path, files: &mut Vec<PathBuf>) -> Result<Vec<Node>, ConfError> {
    let mut toks = Vec::new();
    lex_file(path, None, 0, &mut toks, files)?;
    let mut pos = 0;
    block(&toks, &mut pos, None)
}

/// Reads text as if it were file `name` (includes resolve against the
/// current directory).
pub fn read_str(text: &str, name: &str) -> Result<Vec<Node>, ConfError> {
    let mut toks = Vec::new();
    let mut files = Vec::new();
    let file = Arc::new(PathBuf::from(name));
    lex_text(text, &file, Path::new("."), 0, &mut toks, &mut files)?;
    let mut pos = 0;
    block(&toks, &mut pos, None)
}

fn lex_file(
    path: &Path,
    from: Option<&Loc>,
    depth: usize,
    toks: &mut Vec<Tok>,
    files: &mut Vec<PathBuf>,
) -> Result<(), ConfError> {
    let fail = |msg: String| match from {
        Some(l) => ConfError::at(l, "include", msg),
        None => ConfError::file(path, msg),
    };
    if depth > MAX_INCLUDE_DEPTH {
        return Err(fail(format!(
            "includes nested deeper than {MAX_INCLUDE_DEPTH} (a cycle?)"
        )));
    }
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    if meta.len() > MAX_FILE {
        return Err(fail(format!(
            "{}: larger than {MAX_FILE} bytes",
            path.display()
        )));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    files.push(path.to_path_buf());
    let dir = path.parent().unwrap_or(Path::new("."));
    let file = Arc::new(path.to_path_buf());
    lex_text(&text, &file, dir, depth, toks, files)
}

fn lex_text(
    text: &str,
    file: &Arc<PathBuf>,
    dir: &Path,
    depth: usize,
    toks: &mut Vec<Tok>,
    files: &mut Vec<PathBuf>,
) -> Result<(), ConfError> {
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        let loc = Loc {
            file: file.clone(),
            line: i + 1,
        };
        let (mut line, mut cont) = decomment(raw, &loc)?;
        // A trailing backslash joins the next physical line.
        while cont {
            match lines.next() {
                Some((_, next)) => {
                    let (more, c) = decomment(next, &loc)?;
                    line.push(' ');
                    line.push_str(&more);
                    cont = c;
                }
                None => cont = false,
            }
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('@') {
            return Err(ConfError::at(
                &loc,
                trimmed.split_whitespace().next().unwrap_or("@"),
                "conditional configuration (@) is not supported by xvs",
            ));
        }
        if trimmed.starts_with('$') {
            return Err(ConfError::at(
                &loc,
                trimmed.split_whitespace().next().unwrap_or("$"),
                "parameter definitions ($NAME=...) are not supported by xvs",
            ));
        }
        let words = split(&line, &loc)?;
        if let Some(Tok::Word(w, _)) = words.first() {
            if matches!(
                w.as_str(),
                "include" | "includer" | "includem" | "includew" | "includeb" | "includea"
            ) {
                let kind = w.clone();
                let args: Vec<&str> = words[1..]
                    .iter()
                    .filter_map(|t| match t {
                        Tok::Word(s, _) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect();
                if args.len() != 1 || words.len() != 2 {
                    return Err(ConfError::at(&loc, &kind, "takes one file name or pattern"));
                }
                include(args[0], &kind, &loc, dir, depth, toks, files)?;
                continue;
            }
        }
        toks.extend(words);
        toks.push(Tok::Eol);
    }
    Ok(())
}

fn include(
    pattern: &str,
    kind: &str,
    loc: &Loc,
    dir: &Path,
    depth: usize,
    toks: &mut Vec<Tok>,
    files: &mut Vec<PathBuf>,
) -> Result<(), ConfError> {
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        dir.join(pattern)
    };
    let wild = pattern.contains(['*', '?', '[']);
    let matches = if wild {
        glob(&full)
    } else {
        vec![full.clone()]
    };
    if matches.is_empty() {
        // keepalived's includer tolerates nothing matching; so does a
        // wildcard here (an empty conf.d), but not a missing named file.
        return Ok(());
    }
    for m in matches {
        if !wild && !m.exists() && kind == "includer" {
            continue;
        }
        lex_file(&m, Some(loc), depth + 1, toks, files)?;
    }
    Ok(())
}

/// Expands a path whose components may hold `*`, `?` and `[...]`, sorted.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for comp in pattern.components() {
        let part = comp.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for base in &found {
            if part.contains(['*', '?', '[']) {
                let dir = if base.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    base.clone()
                };
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.') && wild_match(part.as_bytes(), n.as_bytes()))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| base.join(n)));
            } else {
                next.push(base.join(comp.as_os_str()));
            }
        }
        found = next;
    }
    found.retain(|p| p.is_file());
    found
}

/// fnmatch for one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
fn wild_match(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| wild_match(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && wild_match(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(end) = p[1..].iter().position(|&c| c == b']').map(|e| e + 1) else {
                return s.first() == Some(&b'[') && wild_match(&p[1..], &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let mut set = &p[1..end];
            let neg = matches!(set.first(), Some(b'!' | b'^'));
            if neg {
                set = &set[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= (set[i]..=set[i + 2]).contains(&c);
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != neg && wild_match(&p[end + 1..], &s[1..])
        }
        Some(&c) => s.first() == Some(&c) && wild_match(&p[1..], &s[1..]),
    }
}

/// Drops a comment; returns the line and whether it continues on the next.
fn decomment(raw: &str, loc: &Loc) -> Result<(String, bool), ConfError> {
    let mut out = String::with_capacity(raw.len());
    let mut quote = false;
    let mut chars = raw.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quote = !quote;
                out.push(c);
            }
            '\\' => match chars.next() {
                // Outside quotes, \# and \! are the characters themselves.
                Some(n @ ('#' | '!')) if !quote => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => return Ok((out.trim_end().to_string(), true)),
            },
            '#' | '!' if !quote => break,
            _ => out.push(c),
        }
    }
    if quote {
        return Err(ConfError::at(loc, raw.trim(), "unterminated quote"));
    }
    Ok((out.trim_end().to_string(), false))
}

/// Splits a (decommented) line into words and braces.
fn split(line: &str, loc: &Loc) -> Result<Vec<Tok>, ConfError> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = false;
    let mut chars = line.chars();
    let flush = |out: &mut Vec<Tok>, word: &mut String, in_word: &mut bool| {
        if *in_word {
            out.push(Tok::Word(std::mem::take(word), loc.clone()));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        if quote {
            match c {
                '"' => quote = false,
                '\\' => match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some('r') => word.push('\r'),
                    Some(n) => word.push(n),
                    None => word.push('\\'),
                },
                _ => word.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                quote = true;
                in_word = true;
            }
            '{' | '}' => {
                flush(&mut out, &mut word, &mut in_word);
                out.push(if c == '{' {
                    Tok::Open(loc.clone())
                } else {
                    Tok::Close(loc.clone())
                });
            }
            c if c.is_whitespace() => flush(&mut out, &mut word, &mut in_word),
            _ => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote {
        return Err(ConfError::at(loc, line.trim(), "unterminated quote"));
    }
    flush(&mut out, &mut word, &mut in_word);
    Ok(out)
}

/// Statements until the end of the block (`}`) or of the input.
fn block(toks: &[Tok], pos: &mut usize, opener: Option<&Node>) -> Result<Vec<Node>, ConfError> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut cur: Option<Node> = None;
    // The last statement was complete on an earlier line and may still take a
    // `{` from the next line.
    let mut can_open_prev = false;
    loop {
        let Some(t) = toks.get(*pos) else {
            if let Some(n) = cur.take() {
                nodes.push(n);
            }
            return match opener {
                Some(o) => Err(ConfError::at(&o.loc, o.key(), "block has no closing '}'")),
                None => Ok(nodes),
            };
        };
        *pos += 1;
        match t {
            Tok::Word(w, loc) => match &mut cur {
                Some(n) => n.words.push(w.clone()),
                None => {
                    cur = Some(Node {
                        loc: loc.clone(),
                        words: vec![w.clone()],
                        children: None,
                    })
                }
            },
            Tok::Eol => {
                if let Some(n) = cur.take() {
                    nodes.push(n);
                    can_open_prev = true;
                }
            }
            Tok::Open(loc) => {
                let mut target = match cur.take() {
                    Some(n) => n,
                    None if can_open_prev => nodes.pop().expect("a previous statement"),
                    None => return Err(ConfError::at(loc, "{", "'{' without a keyword")),
                };
                can_open_prev = false;
                let children = block(toks, pos, Some(&target))?;
                target.children = Some(children);
                nodes.push(target);
            }
            Tok::Close(loc) => {
                if let Some(n) = cur.take() {
                    nodes.push(n);
                }
                return match opener {
                    Some(_) => Ok(nodes),
                    None => Err(ConfError::at(loc, "}", "'}' without an open block")),
                };
            }
        }
        if matches!(t, Tok::Word(..)) {
            can_open_prev = false;
        }
    }
}

/// Splits a script command line as keepalived does for `misc_path` and the
/// notify scripts: whitespace separates arguments, `'...'` and `"..."` group,
/// a backslash escapes the next character.
pub fn split_command(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut q: Option<char> = None;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match (q, c) {
            (Some(open), c) if c == open => q = None,
            (_, '\\') => {
                if let Some(n) = it.next() {
                    cur.push(n);
                    have = true;
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                q = Some(c);
                have = true;
            }
            (None, c) if c.is_whitespace() => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            (None, c) => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(s: &str) -> Vec<Node> {
        read_str(s, "t.conf").unwrap()
    }

    #[test]
    fn braces_comments_quotes_and_continuations() {
        let n = tree(
            "a 1 2 # comment\n\
             b \"x { y\" ! more\n\
             c {\n  d e\n  f { g }\n}\n\
             h\n{\n i\n}\n\
             j k \\\n  l\n\
             m\\#n\n",
        );
        let keys: Vec<&str> = n.iter().map(|n| n.key()).collect();
        assert_eq!(keys, ["a", "b", "c", "h", "j", "m#n"]);
        assert_eq!(n[0].args(), ["1", "2"]);
        assert_eq!(n[1].args(), ["x { y"]);
        let c = n[2].children.as_ref().unwrap();
        assert_eq!(c[0].words, ["d", "e"]);
        assert_eq!(c[1].children.as_ref().unwrap()[0].words, ["g"]);
        assert_eq!(n[2].loc.line, 3);
        assert_eq!(n[3].children.as_ref().unwrap()[0].words, ["i"]);
        assert_eq!(n[4].words, ["j", "k", "l"]);
    }

    #[test]
    fn unbalanced_braces_are_errors_with_their_line() {
        let e = read_str("a {\n b\n", "t.conf").unwrap_err();
        assert_eq!(e.to_string(), "t.conf:1: a: block has no closing '}'");
        let e = read_str("a\n}\n", "t.conf").unwrap_err();
        assert_eq!(e.to_string(), "t.conf:2: }: '}' without an open block");
        let e = read_str("$X=1\n", "t.conf").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("t.conf:1: $X=1: parameter definitions"));
    }

    #[test]
    fn globs_and_commands() {
        assert!(wild_match(b"*.conf", b"a.conf"));
        assert!(!wild_match(b"*.conf", b"a.cfg"));
        assert!(wild_match(b"vs[0-9]?.conf", b"vs1a.conf"));
        assert!(!wild_match(b"vs[!0-9].conf", b"vs1.conf"));
        assert_eq!(
            split_command("/bin/check 'a b' \"c d\" e\\ f"),
            ["/bin/check", "a b", "c d", "e f"]
        );
    }
}
