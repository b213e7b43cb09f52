//! Stage 4: the checks of spec §4 ([`crate::verify`]); never fails, every outcome is a result.

use crate::pcs::Pcs;
use crate::verify::Outcome;
use crate::Gate;

pub fn run(pcs: &Pcs, gate: &Gate) -> Outcome {
    crate::verify(pcs, &gate.verify)
}
