//! The variables `{{ env("NAME") }}` reads: the process environment, plus what the
//! command line adds (`roundtrip run --var NAME=VALUE --env-file FILE`).
//!
//! Precedence, highest first: `--var`, then the process environment, then `--env-file`
//! (later files override earlier ones). So a file holds a laptop's defaults, CI's
//! environment overrides them, and `--var` overrides both for one invocation.

use std::collections::BTreeMap;

/// Where `env("NAME")` looks. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    /// `--var NAME=VALUE`: above the environment.
    set: BTreeMap<String, String>,
    /// `--env-file`: below the environment.
    files: BTreeMap<String, String>,
}

/// Why an env file or a `--var` could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarsError {
    /// A line of an env file that is not `NAME=VALUE`.
    #[error("{file}:{line}: {reason}")]
    File {
        /// The file, as given.
        file: String,
        /// The 1-based line.
        line: usize,
        /// What is wrong, and what to write instead.
        reason: String,
    },
    /// An env file that cannot be read.
    #[error("failed to read the env file {file}: {reason}")]
    Read {
        /// The file, as given.
        file: String,
        /// Why.
        reason: String,
    },
    /// A `--var` that is not `NAME=VALUE`.
    #[error("`--var {given}`: {reason}")]
    Var {
        /// The argument as given.
        given: String,
        /// What is wrong.
        reason: String,
    },
}

impl Vars {
    /// The process environment alone.
    pub fn from_process() -> Vars {
        Vars::default()
    }

    /// The value of `name`: a `--var`, else the environment, else an env file.
    pub fn get(&self, name: &str) -> Option<String> {
        if let Some(v) = self.set.get(name) {
            return Some(v.clone());
        }
        if let Ok(v) = std::env::var(name) {
            return Some(v);
        }
        self.files.get(name).cloned()
    }

    /// Adds `--var NAME=VALUE`.
    pub fn set_arg(&mut self, arg: &str) -> Result<(), VarsError> {
        let fail = |reason: &str| VarsError::Var {
            given: arg.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| fail("write it as NAME=VALUE"))?;
        check_name(name).map_err(|r| fail(&r))?;
        self.set.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    /// Sets `name` to `value` above the environment, as `--var NAME=VALUE` does (the name
    /// is checked the same way; the value is taken as it is, `=` included).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), VarsError> {
        check_name(name).map_err(|reason| VarsError::Var {
            given: format!("{name}={value}"),
            reason,
        })?;
        self.set.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    /// Adds the variables of the env file at `path` (see [`Vars::add_file`]): a regular
    /// file of at most 1 MiB of UTF-8.
    pub fn read_file(&mut self, path: &std::path::Path) -> Result<(), VarsError> {
        use std::io::Read as _;
        const MAX: u64 = 1 << 20;
        let file = path.display().to_string();
        let fail = |reason: String| VarsError::Read {
            file: file.clone(),
            reason,
        };
        let metadata = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if !metadata.is_file() {
            return Err(fail("it is not a regular file".into()));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX + 1).read_to_end(&mut bytes))
            .map_err(|e| fail(e.to_string()))?;
        if bytes.len() as u64 > MAX {
            return Err(fail("it is larger than 1 MiB".into()));
        }
        let text = String::from_utf8(bytes).map_err(|_| fail("it is not UTF-8".into()))?;
        self.add_file(&file, &text)
    }

    /// Adds the variables of an env file's text: `NAME=VALUE` lines, `#` comments and
    /// blank lines, an optional `export ` prefix, values optionally in single quotes
    /// (taken as written) or double quotes (with `\n`, `\"` and `\\` escapes). `file`
    /// names it in errors.
    pub fn add_file(&mut self, file: &str, text: &str) -> Result<(), VarsError> {
        for (i, raw) in text.lines().enumerate() {
            let fail = |reason: String| VarsError::File {
                file: file.to_owned(),
                line: i + 1,
                reason,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            let (name, value) = line.split_once('=').ok_or_else(|| {
                fail("expected `NAME=VALUE` (or a `#` comment, or a blank line)".to_owned())
            })?;
            let name = name.trim_end();
            check_name(name).map_err(fail)?;
            let value = unquote(value.trim()).map_err(fail)?;
            self.files.insert(name.to_owned(), value);
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a variable name: use letters, digits and `_`, not starting with a \
             digit"
        ))
    }
}

fn unquote(value: &str) -> Result<String, String> {
    if let Some(inner) = value.strip_prefix('\'') {
        return inner
            .strip_suffix('\'')
            .map(str::to_owned)
            .ok_or_else(|| "a value opened with `'` must end with `'`".to_owned());
    }
    let Some(inner) = value.strip_prefix('"') else {
        // Unquoted: up to a ` #` comment.
        let value = value.split_once(" #").map_or(value, |(v, _)| v);
        return Ok(value.trim_end().to_owned());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or_else(|| "a value opened with `\"` must end with `\"`".to_owned())?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_override_the_environment_which_overrides_files() {
        // PATH is set in every environment this runs in.
        let mut vars = Vars::default();
        vars.add_file("a.env", "PATH=/from/file\nROUNDTRIP_TEST_ONLY_IN_FILE=f\n")
            .expect("valid");
        assert_eq!(
            vars.get("ROUNDTRIP_TEST_ONLY_IN_FILE").as_deref(),
            Some("f")
        );
        assert_eq!(vars.get("PATH"), std::env::var("PATH").ok());
        vars.set_arg("PATH=/from/var").expect("valid");
        assert_eq!(vars.get("PATH").as_deref(), Some("/from/var"));
        assert_eq!(vars.get("ROUNDTRIP_TEST_SURELY_UNSET"), None);
    }

    #[test]
    fn env_files_take_quotes_comments_and_export() {
        let mut vars = Vars::default();
        vars.add_file(
            "b.env",
            "# a comment\n\nexport RT_A=1\nRT_B = 'x # y'\nRT_C=\"l1\\nl2 \\\"q\\\"\"\nRT_D=plain # note\nRT_E=\n",
        )
        .expect("valid");
        let get = |n: &str| vars.get(n).unwrap_or_default();
        assert_eq!(get("RT_A"), "1");
        assert_eq!(get("RT_B"), "x # y");
        assert_eq!(get("RT_C"), "l1\nl2 \"q\"");
        assert_eq!(get("RT_D"), "plain");
        assert_eq!(vars.get("RT_E").as_deref(), Some(""));
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let mut vars = Vars::default();
        let err = vars
            .add_file("c.env", "OK=1\nnot a pair\n")
            .expect_err("bad");
        assert_eq!(
            err.to_string(),
            "c.env:2: expected `NAME=VALUE` (or a `#` comment, or a blank line)"
        );
        let err = vars.add_file("c.env", "1X=1\n").expect_err("bad name");
        assert!(
            err.to_string()
                .starts_with("c.env:1: `1X` is not a variable name"),
            "{err}"
        );
        let err = vars.add_file("c.env", "X='open\n").expect_err("unclosed");
        assert!(err.to_string().contains("must end with `'`"), "{err}");
        let err = vars.set_arg("novalue").expect_err("no =");
        assert_eq!(err.to_string(), "`--var novalue`: write it as NAME=VALUE");
    }
}
