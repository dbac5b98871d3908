"""`python -m harness action=plan`: predicted peak memory by part, the GPU needed and step time
for the sweep's configurations (every grid point, or the probe points that cover each choice
and both ends of each range), without training. Same overrides as a sweep."""

from __future__ import annotations

import itertools

from harness.embedded.build import build_embedded
from harness.errors import ConfigError
from harness.estimate.predict import Prediction, gpu_memory_limit, predict
from harness.sweep import driver
from harness.sweep.space import grid, grid_size

COLUMNS = ("weights", "grads", "optimizer", "activations", "logits", "extras", "generation",
           "overhead")


def configurations(sweep: driver.Sweep, limit: int) -> list[dict]:
    """Grid points when the space is a small grid, else the probe points (deduplicated)."""
    points: list[dict] = []
    try:
        if sweep.space and grid_size(sweep.space) <= limit:
            space = grid(sweep.space)
            points = [dict(zip(space, values, strict=True))
                      for values in itertools.product(*space.values())]
    except ConfigError:   # conditional or continuous parameters: no grid
        points = []
    if not points:
        points = driver.probe_points(sweep.space)
    unique: list[dict] = []
    for point in points:
        if point not in unique:
            unique.append(point)
    return unique[:limit]


def plan(overrides: list[str]) -> int:
    """Print the plan table; exit 2 (one line naming the field) on bad input."""
    sweep = driver.prepare(overrides)
    cfg = sweep.cfg
    if cfg.model.source == "embedded":
        build_embedded(cfg.paths.embedded)   # its config.json (cached after the first build)
    limit = gpu_memory_limit(cfg)
    rows, seen = [], []
    for values in configurations(sweep, int(cfg.estimate.plan_max_configs)):
        trial_cfg = driver.trial_config(sweep, values)
        row = (values, str(trial_cfg.method.name), predict(trial_cfg))
        key = (row[1], row[2].peak_gb, row[2].step_seconds)   # lr etc. change no figure
        if key not in seen:
            seen.append(key)
            rows.append(row)
    print(render(rows, limit, cfg))
    return 0


def render(rows: list[tuple[dict, str, Prediction]], limit: float | None, cfg) -> str:
    """The plan as a fixed-width table (GiB; step time in seconds)."""
    head = ["#", "method", "params", "batch x seq", *COLUMNS, "peak GB", "phase", "GPU needed",
            "step s", "train min"]
    lines = []
    notes = []
    for n, (values, method, pred) in enumerate(rows):
        shown = {k: v for k, v in values.items() if k != "method"}
        params = ", ".join(f"{k}={_short(v)}" for k, v in shown.items()) or "-"
        fits = "" if limit is None else ("ok" if pred.peak_gb <= limit else "REFUSED")
        gpu = pred.gpu or ("cpu" if pred.device == "cpu" else "none fits")
        train_min = pred.steps * pred.step_seconds / 60 if pred.step_seconds else 0.0
        lines.append([str(n), method, params[:32],
                      f"{pred.settings['batch']}x{pred.settings['seq']}",
                      *(_gb(pred.parts_gb.get(c, 0.0)) for c in COLUMNS),
                      _gb(pred.peak_gb) + (f" {fits}" if fits else ""), pred.phase, gpu,
                      f"{pred.step_seconds:.3g}", f"{train_min:.1f}"])
        if pred.note:
            notes.append(f"#{n}: {pred.note}")
    widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i < 4 else '>'}{w}}}" for i, w in enumerate(widths))
    first = rows[0][2] if rows else None
    title = (f"plan for sweep {cfg.sweep.name}: model {cfg.model.name}, predicted per "
             f"{first.device if first else 'device'} (GiB)"
             + (f", limit {limit:g} GB (launcher.preflight={cfg.launcher.get('preflight')})"
                if limit is not None else ""))
    out = [title, fmt.format(*head), *(fmt.format(*r) for r in lines)]
    out.append("peak = weights + optimizer + extras + max(activations + logits, grads + "
               "optimizer temporaries, generation) + overhead (CUDA context, allocator)")
    return "\n".join(out + notes)


def _gb(value: float) -> str:
    return "0" if not value else f"{value:.3g}"


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
