//! Stage 2: the tenant's verifier (400 `unknown_tenant`, already checked by the header stage;
//! kept so the body stages are total on their own) and the signature (401 `bad_signature`).

use super::reply::LocalReply;
use crate::pcs::Pcs;
use crate::signature::Verifier;
use crate::Gate;

pub fn verifier<'g>(gate: &'g Gate, tenant: &str) -> Result<&'g Verifier, LocalReply> {
    gate.keyring
        .verifier_for(tenant)
        .map_err(|_| LocalReply::new(400, "unknown_tenant", &format!("unknown tenant {tenant:?}")))
}

pub fn check(verifier: &Verifier, pcs: &Pcs) -> Result<(), LocalReply> {
    verifier.verify(pcs).map_err(|e| {
        LocalReply::new(
            401,
            "bad_signature",
            &format!("signature verification failed: {e}"),
        )
    })
}
