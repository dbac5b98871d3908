"""Trials as SLURM jobs submitted with submitit: the `launcher=slurm` launcher.

    settings   conf/launcher/slurm.yaml -> sbatch options, processes per node
    queue      job states from squeue/sacct (every call bounded), SlurmQueue
    submit     driver side: SlurmLauncher (job arrays, re-attach, sbatch --test-only first),
               SlurmTrialJob (ended or not, and why)
    job        job side, on the compute node: TrialTask (run_trial, or torchrun of it),
               PreemptionHandler (SIGTERM / SIGUSR2: checkpoint first)
    task       job side of a task (registry.TASKS, e.g. re-scoring a saved model): TaskRun

`job.json` in the trial folder names the job, so a restarted driver finds it again.
"""

from harness.launch.slurm.submit import SlurmLauncher

__all__ = ["SlurmLauncher"]
