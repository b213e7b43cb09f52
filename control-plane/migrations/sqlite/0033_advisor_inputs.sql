-- The advisor's inputs (cost, issue 8). decision_log.microvote_ns: the micro-vote callout's
-- wait, ns from dispatch to its answer or timeout, as the filter's cost tracer measured it
-- (x-kakeya-microvote-ns); NULL without a callout or from a gate without the tracer. The
-- micro_vote_deadline rule reads its distribution.
ALTER TABLE decision_log ADD COLUMN microvote_ns BIGINT;
-- dedup_hits: one row per submission answered from dedup, keyed by its WAL record id (a replay
-- adds nothing), with the age of the stored answer it got (hit_at_ms - the answer's
-- created_at_ms). The dedup_ttl rule reads their distribution.
CREATE TABLE IF NOT EXISTS dedup_hits (
    record_id TEXT   NOT NULL PRIMARY KEY,
    tenant    TEXT   NOT NULL,
    pcs_id    TEXT   NOT NULL,
    hit_at_ms BIGINT NOT NULL,
    age_ms    BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS dedup_hits_at ON dedup_hits (hit_at_ms);
