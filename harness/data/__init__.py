"""Data sets of a trial: one JSONL reader (jsonl), SFT rows (sft), preference rows
(preference), the up-front check of every local file (check, early), and the preparation
stage (prepare: sources, formats, filters, dedup, contamination, stage, card)."""
