//! Stage 3: the evidence is bound to the signature (400 `evidence_unbound`, 401
//! `evidence_mismatch`; signed but stripped evidence is 400 `evidence_missing`, never
//! forwarded unscored).

use super::reply::LocalReply;
use crate::evidence::{bound_evidence, Evidence};
use crate::pcs::Pcs;

pub fn bind(pcs: &Pcs) -> Result<Option<&Evidence>, LocalReply> {
    bound_evidence(pcs)
        .map_err(|e| LocalReply::new(u32::from(e.status()), e.code(), &e.to_string()))
}
