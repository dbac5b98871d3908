"""Data sets of a trial: one JSONL reader (jsonl), SFT rows (sft), preference rows
(preference), and the up-front check of every local file (check)."""
