//! The micro-vote: an auxiliary hallucination model in its own process.
//!
//! `encoder` runs all-MiniLM-L6-v2 (candle, CPU); `features` turns (question, context, response,
//! task) into the head's inputs; `head` is the small trained artifact that scores them;
//! `scorer` puts them together behind two bounded caches; `server` is the HTTP listener.

pub mod bench;
pub mod encoder;
pub mod features;
pub mod head;
pub mod metrics;
pub mod scorer;
pub mod server;
