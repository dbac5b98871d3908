"""harness.launch: run trial folders as jobs (base: protocols and job.json; local; slurm)."""
