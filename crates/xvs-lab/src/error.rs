//! Lab errors: every failure names the step of the build that failed.

use thiserror::Error;
use xvs_netns::NetnsError;

/// A failed lab step, displayed as `step "add veth dir-rs1": ip link add ...: RTNETLINK answers: File exists`.
#[derive(Debug, Error)]
#[error("step \"{step}\": {detail}")]
pub struct LabError {
    /// What the lab was doing, e.g. `add veth dir-rs1`.
    pub step: String,
    /// The command and what it said, or the reason.
    pub detail: String,
}

pub type Result<T> = std::result::Result<T, LabError>;

impl LabError {
    pub fn new(step: impl Into<String>, detail: impl Into<String>) -> LabError {
        LabError {
            step: step.into(),
            detail: detail.into(),
        }
    }
}

/// `command: what it printed`, without xvs-netns's backquotes, so the line
/// reads like the shell's.
pub(crate) fn describe(e: &NetnsError) -> String {
    match e {
        NetnsError::Command { cmd, stderr } => format!("{cmd}: {stderr}"),
        NetnsError::Spawn { cmd, source } => format!("{cmd}: {source}"),
        other => other.to_string(),
    }
}

/// Attaches a step name to an error.
pub(crate) trait StepExt<T> {
    fn step(self, step: &str) -> Result<T>;
}

impl<T> StepExt<T> for std::result::Result<T, NetnsError> {
    fn step(self, step: &str) -> Result<T> {
        self.map_err(|e| LabError::new(step, describe(&e)))
    }
}

impl<T> StepExt<T> for std::io::Result<T> {
    fn step(self, step: &str) -> Result<T> {
        self.map_err(|e| LabError::new(step, e.to_string()))
    }
}
