//! Stage 1: the body is a PCS (400 with the parser's code otherwise).

use super::reply::LocalReply;
use crate::pcs::Pcs;

pub fn parse(body: &[u8]) -> Result<Pcs, LocalReply> {
    crate::parse(body).map_err(|e| LocalReply::new(400, e.code(), &e.to_string()))
}
