//! The four scheduler names: as the API spells them and as diffusers' class names.

use crate::error::{EngineError, InvalidKind};
use std::fmt;
use std::str::FromStr;

/// Which diffusion scheduler drives the denoising loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `PNDMScheduler` (PLMS, with the optional Runge-Kutta warm-up); SD v1.x's default.
    Pndm,
    /// `DDIMScheduler`, deterministic (eta = 0).
    Ddim,
    /// `EulerDiscreteScheduler`.
    Euler,
    /// `DPMSolverMultistepScheduler` (DPM++ 2M with its defaults).
    DpmSolverMultistep,
}

impl SchedulerKind {
    /// Every kind, in a stable order.
    pub const ALL: [SchedulerKind; 4] = [
        SchedulerKind::Pndm,
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::DpmSolverMultistep,
    ];

    /// The kind of a diffusers scheduler class (`_class_name` in scheduler_config.json).
    pub fn from_class_name(name: &str) -> Option<Self> {
        match name {
            "PNDMScheduler" => Some(SchedulerKind::Pndm),
            "DDIMScheduler" => Some(SchedulerKind::Ddim),
            "EulerDiscreteScheduler" => Some(SchedulerKind::Euler),
            "DPMSolverMultistepScheduler" => Some(SchedulerKind::DpmSolverMultistep),
            _ => None,
        }
    }

    /// The diffusers class this kind reproduces.
    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Pndm => "PNDMScheduler",
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::DpmSolverMultistep => "DPMSolverMultistepScheduler",
        }
    }

    /// The name the API and the CLI use (`Display` prints it, `FromStr` reads it).
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerKind::Pndm => "pndm",
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Euler => "euler",
            SchedulerKind::DpmSolverMultistep => "dpmpp-2m",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SchedulerKind {
    type Err = EngineError;

    /// Reads `pndm`, `ddim`, `euler`, `dpmpp-2m` or `dpmpp_2m` (any case, trimmed).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.trim().to_ascii_lowercase().as_str() {
            "pndm" => Ok(SchedulerKind::Pndm),
            "ddim" => Ok(SchedulerKind::Ddim),
            "euler" => Ok(SchedulerKind::Euler),
            "dpmpp-2m" | "dpmpp_2m" => Ok(SchedulerKind::DpmSolverMultistep),
            _ => Err(EngineError::invalid(
                InvalidKind::UnknownName,
                "scheduler",
                format!("unknown scheduler `{name}` (expected pndm, ddim, euler or dpmpp-2m)"),
            )),
        }
    }
}

/// Serialised as its API name (`pndm`, `ddim`, `euler`, `dpmpp-2m`).
impl serde::Serialize for SchedulerKind {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_display_and_from_str() {
        for kind in SchedulerKind::ALL {
            assert_eq!(kind.to_string().parse::<SchedulerKind>().unwrap(), kind);
            assert_eq!(
                SchedulerKind::from_class_name(kind.class_name()),
                Some(kind)
            );
        }
        assert_eq!(
            "DPMPP_2M".parse::<SchedulerKind>().unwrap(),
            SchedulerKind::DpmSolverMultistep
        );
    }

    #[test]
    fn unknown_names_are_refused_with_unknown_name() {
        for bad in ["", "lms", "dpm++", "euler-a", "pndm2"] {
            match bad.parse::<SchedulerKind>() {
                Err(EngineError::Invalid { kind, field, .. }) => {
                    assert_eq!(kind, InvalidKind::UnknownName);
                    assert_eq!(field, "scheduler");
                }
                other => panic!("`{bad}` gave {other:?}"),
            }
        }
        assert_eq!(SchedulerKind::from_class_name("LMSDiscreteScheduler"), None);
        assert_eq!(SchedulerKind::from_class_name("pndm"), None);
    }
}
