-- LLM-gateway mode (issue 11): the LLM backend's token counts of a chat completion (its
-- `usage`, or the last chunk's of a stream with stream_options.include_usage), sent by the gate
-- as x-kakeya-llm-tokens with the recorded decision. NULL for PCS traffic and for answers
-- without usage.
ALTER TABLE cost_records ADD COLUMN prompt_tokens BIGINT;
ALTER TABLE cost_records ADD COLUMN completion_tokens BIGINT;
