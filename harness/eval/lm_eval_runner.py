"""lm-evaluation-harness on a model in memory, as `cfg.eval.lm_eval` says.

- `simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer))`: a LoRA trial is scored
  as the unmerged PeftModel, or with the adapter merged into the base weights
  (`merge_adapter: true`; unmerged again afterwards);
- local YAML tasks from `include_path` (`TaskManager(include_path=..., include_defaults=...)`);
  hub tasks (hellaswag, arc_easy, mmlu, ...) by name with `include_defaults: true`;
- lm-eval resolves a relative `dataset_kwargs.data_files` against the current directory, so
  the task folder is copied under the trial folder with such paths made absolute against each
  YAML's own folder (`!function` helpers beside the YAMLs keep working);
- metrics flattened to `lm_eval/<task>/<metric>` and `lm_eval/<task>/<metric>_stderr`
  (`@<filter>` appended for filters other than `none`);
- guard: `lm_eval/identical_to_base` is 1 when the trial's outputs on every example (a hash of
  log-likelihoods / generations per task) equal the base model's, the signature of an adapter
  that was never applied; the driver's `delta_vs_base` holds the score differences.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.eval.cascade import baseline_folder
from harness.eval.lm_eval_lean import lean_lm_eval
from harness.eval.progress_hooks import lm_eval_progress
from harness.layout import RESULT_FILE
from harness.records import COMPLETE, TrialSpec

log = logging.getLogger(__name__)

PREFIX = "lm_eval/"
IDENTICAL_KEY = "lm_eval/identical_to_base"
FINGERPRINT_FILE = "fingerprint.json"
SKIP_RESULT_KEYS = {"alias", "samples", " "}


@dataclass
class LmEvalResult:
    """Flat metrics, the raw per-task results and notes for the record."""

    metrics: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- task files


class _Tagged(str):
    """A YAML scalar with a custom tag (lm-eval's `!function module.fn`), kept verbatim."""

    tag = ""


def _yaml_tools():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    class Dumper(yaml.SafeDumper):
        pass

    def construct(loader, suffix, node):
        value = _Tagged(loader.construct_scalar(node))
        value.tag = "!" + suffix
        return value

    Loader.add_multi_constructor("!", construct)
    Dumper.add_representer(_Tagged, lambda d, v: d.represent_scalar(v.tag, str(v)))
    return yaml, Loader, Dumper


def _absolute(value, base: Path):
    """A data_files value (str, list or split -> str/list) with local relative paths made
    absolute against `base`; URLs and absolute paths unchanged."""
    if isinstance(value, dict):
        return {k: _absolute(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    if isinstance(value, str) and "://" not in value and not Path(value).is_absolute():
        return str((base / value).resolve())
    return value


def resolve_yaml(src: Path, dst: Path) -> bool:
    """Write `src` to `dst` with relative data_files / local dataset_path made absolute;
    returns True if anything changed (else `dst` is a plain copy)."""
    yaml, loader, dumper = _yaml_tools()
    config = yaml.load(src.read_text(encoding="utf-8"), Loader=loader)
    changed = False
    if isinstance(config, dict):
        kwargs = config.get("dataset_kwargs") or {}
        if "data_files" in kwargs:
            new = _absolute(kwargs["data_files"], src.parent)
            changed |= new != kwargs["data_files"]
            kwargs["data_files"] = new
        path = config.get("dataset_path")
        if isinstance(path, str) and path.startswith(("./", "../")):
            config["dataset_path"] = str((src.parent / path).resolve())
            changed = True
    if changed:
        dst.write_text(yaml.dump(config, Dumper=dumper, sort_keys=False, allow_unicode=True))
    else:
        shutil.copyfile(src, dst)
    return changed


def prepare_include_path(include_path: str | Path, out_dir: Path) -> Path:
    """Copy the task folder to `out_dir` with every YAML's data paths made absolute."""
    src = Path(include_path).expanduser().resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"eval.lm_eval.include_path: no task folder at {src}")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(src, out_dir, ignore=shutil.ignore_patterns("__pycache__"))
    for yaml_file in sorted(src.rglob("*.yaml")):
        resolve_yaml(yaml_file, out_dir / yaml_file.relative_to(src))
    return out_dir


# ------------------------------------------------------------------------------- results


def _metric_name(key: str) -> str | None:
    """'acc,none' -> 'acc'; 'exact_match,strict' -> 'exact_match@strict'; else None."""
    if "," not in key:
        return None
    metric, filt = key.split(",", 1)
    return metric if filt == "none" else f"{metric}@{filt}"


def flatten(results: dict, tasks: list[str] | None = None) -> dict[str, float]:
    """`lm_eval/<task>/<metric>` for every numeric score (stderr as `<metric>_stderr`)."""
    metrics: dict[str, float] = {}
    for task, values in results.items():
        if tasks is not None and task not in tasks:
            continue
        for key, value in values.items():
            name = _metric_name(key)
            if name is None or key in SKIP_RESULT_KEYS or isinstance(value, bool):
                continue
            if isinstance(value, int | float) and not math.isnan(float(value)):
                metrics[f"{PREFIX}{task}/{name}"] = float(value)
    return metrics


def _plain(obj):
    """Results made JSON-safe (lm-eval puts callables and numpy values in configs)."""
    return json.loads(json.dumps(obj, default=str))


def write_outputs(raw: dict, out_dir: Path, log_samples: bool) -> Path:
    """results.json (scores, configs, versions) and, if asked, samples_<task>.jsonl."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = {k: raw.get(k) for k in ("results", "groups", "group_subtasks", "configs",
                                    "versions", "n-shot", "higher_is_better", "n-samples")}
    path = out_dir / "results.json"
    path.write_text(json.dumps(_plain(keep), indent=2))
    for task, rows in (raw.get("samples") or {}).items() if log_samples else []:
        with (out_dir / f"samples_{task}.jsonl").open("w") as handle:
            for row in rows:
                handle.write(json.dumps(_plain(row)) + "\n")
    return path


# ------------------------------------------------------------------------------- model


def is_peft(model) -> bool:
    return hasattr(model, "merge_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def adapter_merged(model, merge: bool) -> Iterator[object]:
    """The model with its LoRA adapter merged into the base weights for the block (peft's
    merge_adapter / unmerge_adapter), or unchanged when `merge` is false or there is none."""
    if not merge or not is_peft(model):
        yield model
        return
    model.merge_adapter()
    try:
        yield model
    finally:
        model.unmerge_adapter()


@contextlib.contextmanager
def _tokenizer_state(tokenizer) -> Iterator[None]:
    side = tokenizer.padding_side
    try:
        yield
    finally:
        tokenizer.padding_side = side


def run_lm_eval(model, tokenizer, lm_cfg, out_dir: str | Path, seed: int = 0) -> LmEvalResult:
    """Run the configured tasks on the in-memory model; write results under `out_dir`."""
    out_dir = Path(out_dir)
    tasks = [str(t) for t in lm_cfg.tasks]
    include = lm_cfg.get("include_path")
    task_dir = prepare_include_path(include, out_dir / "tasks") if include else None
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(task_dir) if task_dir else None,
                          include_defaults=bool(lm_cfg.get("include_defaults")) or not task_dir)
    merge = bool(lm_cfg.get("merge_adapter", False))
    with adapter_merged(model, merge) as scored, _tokenizer_state(tokenizer), \
            lm_eval_progress(), lean_lm_eval():   # progress as log lines (progress_hooks);
        # no environment probe, templates compiled once (harness.eval.lm_eval_lean)
        lm = HFLM(pretrained=scored, tokenizer=tokenizer, batch_size=int(lm_cfg.batch_size),
                  max_length=lm_cfg.get("max_length"))
        raw = simple_evaluate(
            model=lm, tasks=tasks, num_fewshot=lm_cfg.get("num_fewshot"),
            limit=lm_cfg.get("limit"), bootstrap_iters=int(lm_cfg.get("bootstrap_iters", 1000)),
            log_samples=True,
            apply_chat_template=_chat_template(lm_cfg, tokenizer),
            gen_kwargs=_gen_kwargs(lm_cfg.get("gen_kwargs")), task_manager=manager,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed, verbosity="WARNING")
    if raw is None:
        raise RuntimeError("lm-eval returned no results")
    keep = None if lm_cfg.get("record_subtasks") else set(tasks)
    result = LmEvalResult(metrics=flatten(raw["results"], keep), results=raw["results"])
    prints = fingerprints(raw.get("samples"))
    (out_dir / FINGERPRINT_FILE).parent.mkdir(parents=True, exist_ok=True)
    (out_dir / FINGERPRINT_FILE).write_text(json.dumps(prints, indent=2))
    result.extra = {"results_file": str(write_outputs(raw, out_dir, bool(lm_cfg.get(
        "log_samples")))), "fingerprints": prints, "adapter": "merged" if merge and
        is_peft(model) else "unmerged" if is_peft(model) else "none"}
    return result


def _chat_template(lm_cfg, tokenizer) -> bool:
    """`apply_chat_template`, switched off (with a warning) for a tokenizer without one."""
    wanted = bool(lm_cfg.get("apply_chat_template", False))
    if wanted and getattr(tokenizer, "chat_template", None) is None:
        log.warning("eval.lm_eval.apply_chat_template: the tokenizer has no chat template; "
                    "scoring plain prompts")
        return False
    return wanted


def _gen_kwargs(value):
    if value is None or isinstance(value, str):
        return value
    return OmegaConf.to_container(value) if not isinstance(value, dict) else value


# ------------------------------------------------------------------------------- base guard


def fingerprints(samples: dict) -> dict[str, str]:
    """Per task, a hash of every example's model outputs (log-likelihoods or generations):
    equal hashes mean the model answered exactly as another one did."""
    out = {}
    for task, rows in (samples or {}).items():
        outputs = sorted((int(r.get("doc_id", 0)), r.get("filtered_resps", r.get("resps")))
                         for r in rows)
        out[task] = hashlib.sha256(json.dumps(outputs, default=str).encode()).hexdigest()
    return out


def base_metrics(folder: Path | None) -> dict | None:
    """Metrics of the base-model record in `folder` (None unless it completed)."""
    try:
        record = json.loads((Path(folder) / RESULT_FILE).read_text())
    except (TypeError, OSError, ValueError):
        return None
    return (record.get("metrics") or {}) if record.get("status") == COMPLETE else None


def base_fingerprints(folder: Path | None) -> dict | None:
    """The base model's lm-eval output fingerprints in `folder`, if it wrote them."""
    try:
        return json.loads((Path(folder) / "lm_eval" / FINGERPRINT_FILE).read_text())
    except (TypeError, OSError, ValueError):
        return None


def compare_to_base(metrics: dict, base: dict | None, prints: dict | None = None,
                    base_prints: dict | None = None) -> tuple[dict[str, float], list[str]]:
    """(metrics to add, warnings): `lm_eval/identical_to_base` = 1 when the trial answered
    every example exactly as the base did (output fingerprints), or, without fingerprints,
    when every lm-eval score equals the base's."""
    shared_prints = sorted(set(prints or {}) & set(base_prints or {}))
    if shared_prints:
        identical = all(prints[t] == base_prints[t] for t in shared_prints)
        what = f"outputs on all {len(shared_prints)} tasks"
    else:
        scores = {k: v for k, v in metrics.items()
                  if k.startswith(PREFIX) and "_stderr" not in k and k != IDENTICAL_KEY}
        shared = [k for k in scores if base and k in base]
        if not shared:
            return {}, []
        identical = all(float(scores[k]) == float(base[k]) for k in shared)
        what = f"scores on all {len(shared)} metrics"
    warnings = []
    if identical:
        warnings.append(f"lm-eval {what} identical to the base model: was the fine-tuned "
                        "adapter applied?")
    return {IDENTICAL_KEY: float(identical)}, warnings


def lm_eval_stage(model, tokenizer, cfg: DictConfig, spec: TrialSpec,
                  out_dir: Path) -> tuple[dict, dict]:
    """The `lm_eval` stage (harness.registry.EVAL_STAGES): the configured tasks under
    `out_dir/lm_eval`, and for a trial the "identical to base" guard against the base folder."""
    result = run_lm_eval(model, tokenizer, cfg.eval.lm_eval, Path(out_dir) / "lm_eval",
                         seed=spec.seed)
    extra = dict(result.extra)
    if not spec.baseline:
        base = baseline_folder(cfg, spec)
        flag, warnings = compare_to_base(result.metrics, base_metrics(base),
                                         result.extra.get("fingerprints"),
                                         base_fingerprints(base))
        result.metrics.update(flag)
        if warnings:
            log.warning(warnings[0])
            extra["warnings"] = warnings
    return result.metrics, extra
