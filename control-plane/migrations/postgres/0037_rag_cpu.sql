-- The RAG vote's in-guest time (cost, issue 8). cost_records.rag_cpu_ns: ns the filter spent on
-- the rag_grounding vote of the decision (x-kakeya-rag-ns, timed by the pipeline when the cost
-- tracer is on), a part of filter_cpu_ns, not priced on top of it; NULL when the tenant's policy
-- has no RAG vote or the gate has no tracer. The advisor's rag_off saving prices its sum.
ALTER TABLE cost_records ADD COLUMN rag_cpu_ns BIGINT;
