//! What can be wrong with a configuration: a list of problems, each with the line it is on.

use std::fmt;

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// 1-based line in the file, when the problem comes from one.
    pub line: Option<usize>,
    /// Dotted path of the field, e.g. `workspaces[0].sources[1].owner`; empty for a syntax error.
    pub path: String,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl ConfigProblem {
    /// A problem not (yet) tied to a line.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            line: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// `path: message`, or just `message` when there is no path.
    fn path_and_message(&self) -> String {
        if self.path.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.path, self.message)
        }
    }
}

/// `line 14: workspaces[0].sources[1].owner: missing — …`; without a line, just `path: message`.
impl fmt::Display for ConfigProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(formatter, "line {line}: {}", self.path_and_message()),
            None => formatter.write_str(&self.path_and_message()),
        }
    }
}

/// Why a configuration file could not be loaded: every problem found, each naming the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    file: String,
    problems: Vec<ConfigProblem>,
}

impl LoadError {
    /// Problems found in `file` (a path or name as it should appear in messages).
    pub fn new(file: impl Into<String>, problems: Vec<ConfigProblem>) -> Self {
        LoadError {
            file: file.into(),
            problems,
        }
    }

    /// Every problem, in file order where lines are known.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }

    /// The file the problems are in, as given to [`crate::load`] or [`crate::parse`].
    pub fn file(&self) -> &str {
        &self.file
    }
}

/// One problem a line: `FILE:LINE: path.to.field: message` (`FILE: …` when the line is unknown).
impl fmt::Display for LoadError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                formatter.write_str("\n")?;
            }
            match problem.line {
                Some(line) => write!(
                    formatter,
                    "{}:{line}: {}",
                    self.file,
                    problem.path_and_message()
                )?,
                None => write!(formatter, "{}: {}", self.file, problem.path_and_message())?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_error_prints_one_problem_per_line_with_file_and_line() {
        let mut located = ConfigProblem::new(
            "workspaces[0].sources[1].owner",
            "missing — every source needs an owner",
        );
        located.line = Some(14);
        let error = LoadError::new(
            "tandem.toml",
            vec![located, ConfigProblem::new("", "cannot read: gone")],
        );
        assert_eq!(
            error.to_string(),
            "tandem.toml:14: workspaces[0].sources[1].owner: missing — every source needs an owner\ntandem.toml: cannot read: gone"
        );
    }

    #[test]
    fn problem_without_line_prints_path_and_message() {
        assert_eq!(
            ConfigProblem::new("server.listen", "bad").to_string(),
            "server.listen: bad"
        );
    }
}
