"""Can the trials reach the sweep's judge? Checked before anything is submitted.

With launcher=slurm the trials run on compute nodes, where 127.0.0.1 / localhost is the node
itself: a judge at a loopback address of the driver host would turn every grading into a
recorded judge error. Refused, one line naming the field: `eval.judge.base_url` when the user
gave a loopback URL, `eval.judge.serve.where` when the local judge would be served on the
driver's 127.0.0.1 (where=local).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from omegaconf import DictConfig

from harness.errors import ConfigError
from harness.registry import JUDGE_SERVICES

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def is_loopback(url: str) -> bool:
    """True when the URL's host is a loopback (or unspecified) address or name."""
    host = (urlsplit(url if "//" in url else f"//{url}").hostname or "").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def check_judge_reach(cfg: DictConfig) -> None:
    """eval.judge.serve.where names a judge service; with launcher=slurm and MT-Bench on, the
    judge is not at a loopback address of the driver host."""
    ev = cfg.get("eval") or {}
    judge = ev.get("judge") or {}
    serve = judge.get("serve") or {}
    where = serve.get("where", "local")
    if JUDGE_SERVICES.check(where):
        raise ConfigError(JUDGE_SERVICES.check(where))
    slurm = serve.get("slurm") or {}
    heartbeat, stale = slurm.get("heartbeat_s", 5), slurm.get("stale_s", 60)
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0
                  for v in (heartbeat, stale))
    if where == "slurm" and (not numbers or stale <= 2 * heartbeat):
        raise ConfigError(f"eval.judge.serve.slurm.stale_s must be > 2 x heartbeat_s (both > 0), "
                          f"got stale_s={stale!r}, heartbeat_s={heartbeat!r}")
    if (cfg.get("launcher") or {}).get("name") != "slurm" or \
            not (ev.get("mt_bench") or {}).get("enabled"):
        return
    if judge.get("base_url"):
        if is_loopback(str(judge.base_url)):
            raise ConfigError(f"eval.judge.base_url={judge.base_url} is a loopback address: "
                              "SLURM trials on compute nodes cannot reach it (give the judge "
                              "host's name, or base_url=null with eval.judge.serve.where=slurm)")
    elif serve.get("model_path") and where == "local":
        raise ConfigError("eval.judge.serve.where=local serves the judge on the driver host's "
                          "127.0.0.1, which SLURM trials on compute nodes cannot reach: use "
                          "eval.judge.serve.where=slurm (the judge as its own SLURM job)")
