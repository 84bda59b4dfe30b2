//! The `script` writer's configuration: its options as written ([`RawScript`]), their validation
//! (problems reported by key path) and the validated [`ScriptConfig`] the writer is built from.
//!
//! The command is an argv list run without a shell. Its first element, when it holds a `/` and is
//! relative, is resolved against the configuration file's directory (which is also the script's working
//! directory); a bare name is looked up in `PATH`. Either must name an executable file when the
//! configuration is loaded, so `check-config` catches a typo.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::Seg::{self, Index, Key};
use crate::config::{Errors, with};

/// Default limit of one run of the script; it is killed (with its process group) after it.
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[[writer]]` options of `type = "script"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScript {
    /// Name services refer to.
    pub name: String,
    /// The program and its arguments, `["./dns.py", "--zone", "example.com"]`.
    #[serde(deserialize_with = "argv")]
    pub command: Vec<String>,
    /// Limit of one run.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub timeout: Option<Duration>,
    /// Extra environment variables (secrets go here or in files, never on the command line).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The script checks the precondition atomically with the change and exits 4 when it fails.
    pub compare_and_swap: Option<bool>,
    /// A `read` right after an `apply` shows the change.
    pub read_back: Option<bool>,
}

/// `type = "script"`, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct ScriptConfig {
    /// The program: an absolute path, a path relative to `dir`, or a bare name looked up in `PATH`.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Working directory: the configuration file's directory.
    pub dir: PathBuf,
    /// Limit of one run.
    pub timeout: Duration,
    /// Extra environment variables, on top of rrguard's own environment.
    pub env: BTreeMap<String, String>,
    /// Declared compare-and-swap (default false).
    pub compare_and_swap: bool,
    /// Declared read-back (default true).
    pub read_back: bool,
}

impl fmt::Debug for ScriptConfig {
    // Environment values may be secrets: print their names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptConfig")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("dir", &self.dir)
            .field("timeout", &self.timeout)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("compare_and_swap", &self.compare_and_swap)
            .field("read_back", &self.read_back)
            .finish()
    }
}

/// `command = [...]`, with a message that says what to write when it is a single string.
pub(crate) fn argv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        List(Vec<String>),
        Text(String),
    }
    match Written::deserialize(d).map_err(|_: D::Error| {
        serde::de::Error::custom("command is a list of strings, like [\"./dns.py\", \"--verbose\"]")
    })? {
        Written::List(list) => Ok(list),
        Written::Text(s) => Err(serde::de::Error::custom(format!(
            "command is a list, run without a shell: write command = [{s:?}] (one string per argument)"
        ))),
    }
}

/// Validates the writer at key path `wpath`; a relative program path is resolved against `base_dir`.
/// Problems go to `errs`, and then `None` is returned.
pub(crate) fn validate(
    r: &RawScript,
    wpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<ScriptConfig> {
    let before = errs.len();
    // The script runs later, from the daemon: pin the directory now (`-c rrguard.toml` gives "").
    let base_dir = &absolute(base_dir);
    let cpath = with(wpath, &[Key("command")]);
    let program = match r.command.first() {
        None => {
            errs.at(
                &cpath,
                "command must name a program, like [\"./dns.py\"] or [\"/usr/local/bin/dns-hook\", \"--zone\", \"example.com\"]",
            );
            None
        }
        Some(first) => program(first, &r.env, base_dir)
            .map_err(|m| errs.at(&with(&cpath, &[Index(0)]), m))
            .ok(),
    };
    for (i, arg) in r.command.iter().enumerate() {
        if arg.contains('\0') {
            errs.at(
                &with(&cpath, &[Index(i)]),
                "command arguments cannot hold a NUL character",
            );
        }
    }
    for (k, v) in &r.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            errs.at(
                &with(wpath, &[Key("env")]),
                format!(
                    "env {k:?}: a variable name must be non-empty without '=' or NUL, and its value without NUL"
                ),
            );
        }
    }
    if errs.len() != before {
        return None;
    }
    Some(ScriptConfig {
        program: program?,
        args: r.command[1..].to_vec(),
        dir: base_dir.to_path_buf(),
        timeout: r.timeout.unwrap_or(DEFAULT_SCRIPT_TIMEOUT),
        env: r.env.clone(),
        compare_and_swap: r.compare_and_swap.unwrap_or(false),
        read_back: r.read_back.unwrap_or(true),
    })
}

/// `dir` as an absolute path without `.` components (the current directory for an empty one).
pub(crate) fn absolute(dir: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    cwd.join(dir)
        .components()
        .filter(|c| *c != std::path::Component::CurDir)
        .collect()
}

/// The program to run for `first`: a path (relative ones joined to `base_dir`) that must be an
/// executable file, or a bare name that must be found in `PATH` (the configured `env.PATH` if set).
pub(crate) fn program(
    first: &str,
    env: &BTreeMap<String, String>,
    base_dir: &Path,
) -> Result<PathBuf, String> {
    if first.is_empty() {
        return Err("the program name is empty".to_owned());
    }
    if first.contains('/') {
        // "./dns.py" names base_dir/dns.py; drop the "." so messages show a clean path.
        let relative: PathBuf = Path::new(first)
            .components()
            .filter(|c| *c != std::path::Component::CurDir)
            .collect();
        let path = base_dir.join(relative);
        check_executable(&path)?;
        return Ok(path);
    }
    let search = env
        .get("PATH")
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    let found = std::env::split_paths(&search)
        .map(|dir| dir.join(first))
        .find(|p| check_executable(p).is_ok());
    match found {
        Some(_) => Ok(PathBuf::from(first)),
        None => Err(format!(
            "program {first:?} is not in PATH ({}); give its path, like \"/usr/local/bin/{first}\" or \"./{first}\" (relative to this file's directory)",
            search.to_string_lossy()
        )),
    }
}

/// Ok if `path` is a file someone may execute.
fn check_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot use program {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("program {} is not a file", path.display()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "program {} is not executable; run `chmod +x {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use crate::config::{ConfigError, WriterKind, parse};

    /// Parses a one-writer config with writer options `options`, in a directory holding an executable
    /// `hook.sh` and a non-executable `plain.sh`.
    fn script(options: &str) -> Result<super::ScriptConfig, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("hook.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(dir.path().join("plain.sh"), "#!/bin/sh\n").unwrap();
        let text = format!(
            "[[writer]]\nname = \"w\"\ntype = \"script\"\n{options}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"w\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n"
        );
        match parse(&dir.path().join("rrguard.toml"), &text) {
            Ok(c) => match &c.writers[0].kind {
                WriterKind::Script(s) => {
                    assert_eq!(s.dir, dir.path());
                    Ok(s.clone())
                }
                other => panic!("{other:?}"),
            },
            Err(ConfigError::Invalid { problems, .. }) => {
                Err(problems.into_iter().map(|p| p.message).collect())
            }
            Err(e) => Err(vec![e.to_string()]),
        }
    }

    #[test]
    fn defaults_and_resolution() {
        let s = script("command = [\"./hook.sh\", \"--zone\", \"x\"]").unwrap();
        assert!(s.program.ends_with("hook.sh") && s.program.is_absolute());
        assert_eq!(s.args, ["--zone", "x"]);
        assert_eq!(s.timeout, super::DEFAULT_SCRIPT_TIMEOUT);
        assert!(!s.compare_and_swap && s.read_back);
        let s = script("command = [\"sh\", \"-c\", \"true\"]\ntimeout = \"2s\"\ncompare_and_swap = true\nread_back = false\nenv = { TOKEN = \"t0ps3cret\" }").unwrap();
        assert_eq!(s.program, std::path::PathBuf::from("sh"));
        assert!(s.compare_and_swap && !s.read_back);
        assert_eq!(s.timeout, std::time::Duration::from_secs(2));
        // Environment values stay out of logs.
        assert!(!format!("{s:?}").contains("t0ps3cret"));
    }

    /// `rrguard check-config -c rrguard.toml` (a bare file name) must still run the script from the
    /// config's directory, whatever the daemon's directory is later.
    #[test]
    fn a_relative_config_path_gives_absolute_program_and_directory() {
        let text = "[[writer]]\nname = \"w\"\ntype = \"script\"\ncommand = [\"./etc/examples/rrguard-script-example.py\"]\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"w\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n";
        // Tests run in the package root.
        let c = parse(std::path::Path::new("rrguard.toml"), text).unwrap();
        let WriterKind::Script(s) = &c.writers[0].kind else {
            panic!("a script writer")
        };
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(s.dir, root);
        assert_eq!(
            s.program,
            root.join("etc/examples/rrguard-script-example.py")
        );
    }

    #[test]
    fn problems_name_the_fix() {
        let cases = [
            ("command = \"./hook.sh\"", "write command = [\"./hook.sh\"]"),
            ("command = []", "command must name a program"),
            ("command = [\"./missing.sh\"]", "missing.sh: No such file"),
            ("command = [\"./plain.sh\"]", "chmod +x"),
            ("command = [\"no-such-program-anywhere\"]", "is not in PATH"),
            (
                "command = [\"./hook.sh\"]\nenv = { \"A=B\" = \"x\" }",
                "env \"A=B\"",
            ),
        ];
        for (options, says) in cases {
            let problems = script(options).unwrap_err();
            assert!(
                problems.iter().any(|p| p.contains(says)),
                "{options}: {problems:?}"
            );
        }
    }
}
