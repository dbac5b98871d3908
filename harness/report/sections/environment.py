"""What the records were made with: package versions, devices and git commits (with a warning
when they differ), and what made the report.

    extract_environment(data) -> EnvironmentInfo     render_environment(info, figs) -> HTML
"""

from __future__ import annotations

import platform
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata

from harness.report.figures import Figures
from harness.report.html import note, table
from harness.sweep.results import NO_RESULT, SweepData, device_text

REPORT_PACKAGES = ("optuna", "plotly", "pandas")


@dataclass(frozen=True)
class EnvironmentInfo:
    versions: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]  # package, (version, records)
    devices: tuple[tuple[str, int], ...]        # device text, records (most common first)
    commits: tuple[tuple[str, int], ...]        # git commit, records (most common first)
    made: datetime
    python: str
    tools: tuple[tuple[str, str], ...]          # the report's own packages and versions

    @property
    def mixed(self) -> bool:
        """The records were made with more than one version of a package, or commit."""
        return any(len(v) > 1 for _, v in self.versions) or len(self.commits) > 1


def extract_environment(data: SweepData) -> EnvironmentInfo:
    """Package versions and git commits the records were made with."""
    records = [r for r in data.records if r.status != NO_RESULT]
    records += [data.baseline] if data.baseline else []
    versions: dict[str, Counter] = {}
    for record in records:
        for package, version in (record.versions or {}).items():
            versions.setdefault(package, Counter())[str(version)] += 1
    commits = Counter(str(r.git_commit) for r in records if r.git_commit)
    devices = Counter(device_text(r) for r in records)
    return EnvironmentInfo(
        versions=tuple((p, tuple(c.items())) for p, c in sorted(versions.items())),
        devices=tuple(devices.most_common()), commits=tuple(commits.most_common()),
        made=datetime.now(), python=platform.python_version(),
        tools=tuple((p, package_version(p)) for p in REPORT_PACKAGES))


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def render_environment(info: EnvironmentInfo, figs: Figures) -> str:
    rows = [[p, ", ".join(f"{v} ({n} records)" if len(found) > 1 else v for v, n in found)]
            for p, found in info.versions]
    parts = [table(["package", "version"], rows, "compact") if rows
             else note("No package versions recorded."),
             table(["device (GPU or CPU)", "records"], [list(d) for d in info.devices],
                   "compact") if info.devices else note("No device recorded."),
             table(["git commit", "records"], [list(c) for c in info.commits], "compact")
             if info.commits else note("No git commit recorded.")]
    if info.mixed:
        parts.insert(0, note("Warning: the records were made with different versions."))
    parts.append(note(f"Report made {info.made:%Y-%m-%d %H:%M} with python {info.python}, "
                      + ", ".join(f"{p} {v}" for p, v in info.tools)))
    return "".join(parts)
