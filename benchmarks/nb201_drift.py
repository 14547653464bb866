"""Drift to parameter-free cells in the NAS-Bench-201 space: CDARTS against first-order DARTS on real images.

    .venv/bin/python benchmarks/nb201_drift.py --quick                    # a short run: proves it runs
    .venv/bin/python benchmarks/nb201_drift.py                            # docs/results/nb201_drift_digits.*
    .venv/bin/python benchmarks/nb201_drift.py --benchmark DIR            # also the derived cells' benchmark index

Every run is a real ``cdarts-search --space nb201 --method cdarts|darts`` (``python -m search``, one process
each, ``--threads 1``, at most ``--parallel`` at a time) on scikit-learn's digits (an ImageFolder written by
``tools/prepare_digits.py`` into a temporary folder).  From each run's ``log.jsonl`` (per epoch: the derived cell,
arg-max of every edge with ``none`` included, and the normalised alpha entropy) it counts the share of the 6 edges
that are ``skip_connect``, ``none``, ``avg_pool_3x3`` and parameter-free (those three: the operations without
weights), and writes ``NAME.json``, ``NAME.md`` and ``NAME.png`` to ``--out``.  The benchmark index needs
``--benchmark DIR``; the found cells' CIFAR accuracies need the full benchmark copy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cdarts_deploy.deploy.int8_cpu import cpu_flags
from cdarts_deploy.deploy.versions import cpu_load, cpu_model
from cdarts_deploy.drawing.figures import pyplot
from search.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
NAME = "nb201_drift_digits"
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
PARAM_FREE = ("none", "skip_connect", "avg_pool_3x3")
METHODS = ("cdarts", "darts")

# The reduced settings (the paper's Table 1 NAS-Bench-201 row: CIFAR 32 px, batch 64, 50 epochs, C=16, N=5).
SETTINGS: dict[str, dict[str, Any]] = {
    "default": dict(size=16, width=8, cells=1, eval_cells=1, batch_size=32, epochs=30, warmup_epochs=2,
                    train_fraction=0.49, val_fraction=0.49, arch_lr=3e-3, head_mid=16, head_embed=32, max_steps=0),
    "quick": dict(size=16, width=4, cells=1, eval_cells=1, batch_size=32, epochs=2, warmup_epochs=1,
                  train_fraction=0.25, val_fraction=0.25, arch_lr=3e-3, head_mid=16, head_embed=32, max_steps=3),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="CDARTS vs DARTS in the NAS-Bench-201 space on scikit-learn's digits: "
                                "per-epoch share of skip_connect / none / parameter-free edges and alpha entropy")
    p.add_argument("--out", default=str(REPO / "docs" / "results"), help="folder for NAME.json, NAME.md, NAME.png")
    p.add_argument("--name", default=NAME, help=f"file stem of the results (default {NAME})")
    p.add_argument("--work", default="", help="folder for the digits and the run folders (default: a temporary "
                   "folder); finished runs found there are reused")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (default cdarts,darts)")
    p.add_argument("--parallel", type=int, default=2, help="searches at a time, one torch thread each (default 2)")
    p.add_argument("--benchmark", default="", help="NATS-Bench topology folder (simple layout) for the index")
    p.add_argument("--quick", action="store_true", help="a few steps per epoch, 3 epochs: checks that it runs")
    for key, value in SETTINGS["default"].items():
        p.add_argument("--" + key.replace("_", "-"), type=type(value), default=None,
                       help=f"override the setting (default {value})")
    return p


def search_command(method: str, seed: int, data: Path, out: Path, s: dict[str, Any], benchmark: str) -> list[str]:
    cmd = [sys.executable, "-m", "search", "--space", "nb201", "--method", method, "--seed", str(seed),
           "--dataset", "imagefolder", "--data-root", str(data), "--out", str(out), "--input-size", str(s["size"]),
           "--threads", "1", "--no-progress"]
    for key in ("width", "cells", "eval_cells", "batch_size", "epochs", "warmup_epochs", "train_fraction",
                "val_fraction", "arch_lr", "head_mid", "head_embed", "max_steps"):
        cmd += ["--" + key.replace("_", "-"), str(s[key])]
    if benchmark:
        cmd += ["--benchmark", benchmark]
    return cmd


def read_log(folder: Path) -> list[dict[str, Any]]:
    path = folder / "log.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


def run_search(method: str, seed: int, data: Path, work: Path, s: dict[str, Any], benchmark: str) -> dict[str, Any]:
    """One search through the CLI; a finished run in ``work`` (its ``wall.json``) is reused."""
    folder = work / f"{method}_seed{seed}"
    done = folder / "wall.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished run of an earlier invocation: start it again
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    started, t0 = time.time(), time.perf_counter()
    with open(work / f"{method}_seed{seed}.txt", "w") as console:
        rc = subprocess.run(search_command(method, seed, data, folder, s, benchmark), cwd=REPO, env=env,
                            stdout=console, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise RuntimeError(f"{method} seed {seed}: cdarts-search exited with {rc}; see {work}/{method}_seed{seed}.txt")
    info = {"method": method, "seed": seed, "wall_s": round(time.perf_counter() - t0, 1),
            "started": time.strftime("%H:%M:%S", time.gmtime(started)),
            "finished": time.strftime("%H:%M:%S", time.gmtime())}
    done.write_text(json.dumps(info) + "\n")
    return info


def run_all(jobs: list[tuple[str, int]], data: Path, work: Path, s: dict[str, Any], benchmark: str,
            parallel: int) -> dict[tuple[str, int], dict[str, Any]]:
    total = len(jobs) * (s["epochs"] + s["warmup_epochs"])
    with ThreadPoolExecutor(max_workers=parallel) as pool, tqdm(total=total, unit="epoch", desc="searches") as bar:
        futures = {job: pool.submit(run_search, *job, data, work, s, benchmark) for job in jobs}
        while True:
            done = sum(len(read_log(work / f"{m}_seed{seed}")) for m, seed in jobs)
            bar.update(done - bar.n)
            if all(f.done() for f in futures.values()):
                break
            time.sleep(5)
    return {job: f.result() for job, f in futures.items()}


def shares(arch: str) -> dict[str, float]:
    """Shares of the 6 edges of a benchmark string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
    ops = [tok.split("~")[0] for node in arch.split("+") for tok in node.strip("|").split("|")]
    out = {op: ops.count(op) / len(ops) for op in ("skip_connect", "none", "avg_pool_3x3")}
    out["param_free"] = sum(ops.count(op) for op in PARAM_FREE) / len(ops)
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def final_alpha_mass(folder: Path) -> dict[str, float] | None:
    """Mean softmax weight of each operation over the 6 edges, from the final checkpoint's alpha."""
    try:
        alpha = load_checkpoint(folder / "checkpoint.pt")["space"]["search_net"]["alpha"]
    except Exception:  # the checkpoint is a convenience here; the log carries the per-epoch record
        return None
    p = torch.softmax(alpha.float(), dim=-1).mean(0).tolist()
    return {op: round(v, 4) for op, v in zip(OPS, p)}


def analyse(jobs: list[tuple[str, int]], work: Path, walls: dict[tuple[str, int], dict]) -> dict[str, Any]:
    runs = []
    for method, seed in jobs:
        folder = work / f"{method}_seed{seed}"
        rows = read_log(folder)
        epochs = [dict(epoch=r["epoch"], phase=r["phase"], arch=r["arch"], alpha_entropy=r["alpha_entropy"],
                       bench_index=r.get("bench_index"), val_acc_search=r.get("val_acc_search"),
                       seconds=r["seconds"], **shares(r["arch"])) for r in rows]
        final = rows[-1]
        runs.append(dict(method=method, seed=seed, wall_s=walls[(method, seed)]["wall_s"],
                         final_val_acc_search=final.get("val_acc_search"), final_val_acc_eval=final.get("val_acc_eval"),
                         started=walls[(method, seed)]["started"], finished=walls[(method, seed)]["finished"],
                         final_arch=final["arch"], final_index=final.get("bench_index"),
                         final_alpha_mass=final_alpha_mass(folder), epochs=epochs))
    methods = sorted({m for m, _ in jobs}, key=METHODS.index)
    per_epoch: dict[str, list[dict[str, Any]]] = {}
    final: dict[str, dict[str, Any]] = {}
    keys = ("skip_connect", "none", "avg_pool_3x3", "param_free", "alpha_entropy")
    for m in methods:
        mine = [r for r in runs if r["method"] == m]
        n = min(len(r["epochs"]) for r in mine)
        per_epoch[m] = []
        for e in range(n):
            row: dict[str, Any] = {"epoch": e, "phase": mine[0]["epochs"][e]["phase"]}
            for k in keys:
                mu, sd = mean_sd([r["epochs"][e][k] for r in mine])
                row[k] = [round(mu, 5), round(sd, 5)]
            pf = [r["epochs"][e]["param_free"] for r in mine]
            row["param_free_min_max"] = [min(pf), max(pf)]
            per_epoch[m].append(row)
        final[m] = {k: per_epoch[m][-1][k] for k in keys}
        final[m]["wall_s"] = [round(v, 1) for v in mean_sd([r["wall_s"] for r in mine])]
    paired = None
    if set(METHODS) <= set(methods):
        seeds = sorted({s for _, s in jobs})
        pf = {(r["method"], r["seed"]): r["epochs"][-1]["param_free"] for r in runs}
        diffs = [pf[("cdarts", s)] - pf[("darts", s)] for s in seeds]
        mu, sd = mean_sd(diffs)
        paired = {"seeds": seeds, "cdarts_minus_darts": [round(d, 4) for d in diffs], "mean": round(mu, 4),
                  "sd": round(sd, 4),
                  "seed_sd_cdarts": final["cdarts"]["param_free"][1], "seed_sd_darts": final["darts"]["param_free"][1]}
    return {"runs": runs, "per_epoch": per_epoch, "final": final, "paired_final_param_free": paired}


def searches_span(walls: dict[tuple[str, int], dict[str, Any]]) -> float:
    """Seconds from the first search's start to the last one's end (same UTC day)."""
    secs = {key: [sum(int(v) * k for v, k in zip(w[key].split(":"), (3600, 60, 1))) for w in walls.values()]
            for key in ("started", "finished")}
    return float(max(secs["finished"]) - min(secs["started"]))


def conditions(s: dict[str, Any], parallel: int, n_images: dict[str, int]) -> dict[str, Any]:
    simd = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "sse4", "f16c", "vnni")))
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_simd_flags": simd, "load_at_end": cpu_load(),
            "torch": torch.__version__, "python": platform.python_version(), "torch_threads_per_run": 1,
            "runs_at_a_time": parallel, "images": n_images}


def plot(result: dict[str, Any], path: Path, title: str) -> None:
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"cdarts": "tab:blue", "darts": "tab:red"}
    for m, rows in result["per_epoch"].items():
        x = [r["epoch"] for r in rows]
        ax.plot(x, [r["param_free"][0] for r in rows], color=colours.get(m), label=f"{m} (mean of seeds)")
        ax.fill_between(x, [r["param_free_min_max"][0] for r in rows], [r["param_free_min_max"][1] for r in rows],
                        color=colours.get(m), alpha=0.2, label=f"{m} seed min-max")
        ent, sd = ([r["alpha_entropy"][i] for r in rows] for i in (0, 1))
        ax2.plot(x, ent, color=colours.get(m), label=m)
        ax2.fill_between(x, [a - b for a, b in zip(ent, sd)], [a + b for a, b in zip(ent, sd)],
                         color=colours.get(m), alpha=0.2)
    warm = result["settings"]["warmup_epochs"]
    for a in (ax, ax2):
        a.axvline(warm - 0.5, color="grey", ls=":", lw=1)
        a.set_xlabel("epoch (dotted: end of warm-up; alpha fixed before it)")
        a.xaxis.get_major_locator().set_params(integer=True)
    ax.set(ylabel="share of the 6 edges (none, skip, avg_pool)", ylim=(-0.02, 1.02),
           title="parameter-free edges in the derived cell")
    ax2.set(ylabel="alpha entropy / log 5 (mean ± sd)", title="normalised alpha entropy")
    ax2.ticklabel_format(axis="y", useOffset=False)
    ax.legend(fontsize=8, loc="lower right")
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(pair: list[float], digits: int = 3) -> str:
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def markdown(result: dict[str, Any], name: str) -> str:
    s, c = result["settings"], result["conditions"]
    methods = list(result["per_epoch"])
    lines = [
        f"# NAS-Bench-201 space: drift to parameter-free cells, CDARTS vs DARTS on digits ({name})",
        "",
        f"Written by `benchmarks/nb201_drift.py`; numbers in `{name}.json`, plot in `{name}.png`.",
        "",
        "**A reduced run.** Every run is `cdarts-search --space nb201 --method cdarts|darts` on scikit-learn's "
        f"1,797 digits ({c['images']['train']} images for w_S, {c['images']['val']} for alpha and w_E, 10 classes, "
        f"{s['size']}x{s['size']} px), seeds {', '.join(map(str, result['seeds']))}. Versus the paper's Table 1 "
        "NAS-Bench-201 row (CIFAR, 32 px, batch 64, 50 search epochs, C=16, N=5 cells per stage, arch lr 3e-4):",
        "",
        "| setting | paper | this run |",
        "|---|---|---|",
        f"| data | CIFAR-10/100, ImageNet16-120 | digits, {s['size']} px |",
        f"| search epochs (+ warm-up, alpha fixed) | 50 | {s['epochs']} (+ {s['warmup_epochs']}) |",
        f"| batch size | 64 | {s['batch_size']} |",
        f"| width C / cells per stage N (search net) | 16 / 5 | {s['width']} / {s['cells']} |",
        f"| evaluation network cells per stage (CDARTS) | 5 | {s['eval_cells']} |",
        f"| alpha learning rate (Adam) | 3e-4 | {s['arch_lr']:g} (raised: about "
        f"{result['steps_per_epoch']} steps per epoch here, 390 on CIFAR) |",
        f"| embedding heads (1x1 / 2x2 width) | 128 / 768 | {s['head_mid']} / {s['head_embed']} |",
        "| skip-connect L1 (Eq. 11) | off | off (the space's default) |",
        "",
        "Everything else is the CLI's default for `--space nb201` (SGD lr 0.1 cosine, momentum 0.9, wd 3e-4, "
        "lambda 4, S_E = S_U = 1 epoch). The cell is derived by the benchmark's rule: arg-max of every edge, "
        "`none` included. **Parameter-free share** = share of the 6 edges that are `none`, `skip_connect` or "
        "`avg_pool_3x3` (the operations without weights). **Alpha entropy** = mean over the 6 edges of the "
        "softmax entropy / log 5 (1 = uniform, 0 = one operation per edge).",
        "",
        "## Final epoch (mean ± sd over seeds)",
        "",
        "| method | skip_connect share | none share | avg_pool share | parameter-free share | alpha entropy "
        "| wall time per run (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        f = result["final"][m]
        lines.append(f"| {m} | {fmt(f['skip_connect'])} | {fmt(f['none'])} | {fmt(f['avg_pool_3x3'])} | "
                     f"{fmt(f['param_free'])} | {fmt(f['alpha_entropy'], 4)} | {fmt(f['wall_s'], 0)} |")
    p = result["paired_final_param_free"]
    if p:
        lines += ["", "**Paired comparison** (same seed: same data split, same initial alpha): final parameter-free "
                  f"share CDARTS - DARTS per seed {p['cdarts_minus_darts']}, mean {p['mean']:+.3f} ± {p['sd']:.3f}; "
                  f"seed spread (sd) of the share itself: CDARTS {p['seed_sd_cdarts']:.3f}, DARTS "
                  f"{p['seed_sd_darts']:.3f}. One edge is 1/6 = 0.167 of the share."]
    lines += ["", "## Per epoch (mean ± sd over seeds)", ""]
    header = "| epoch | phase | " + " | ".join(f"{m} skip | {m} none | {m} param-free | {m} entropy" for m in methods)
    lines += [header + " |", "|---|---|" + "---|" * (4 * len(methods))]
    n = min(len(v) for v in result["per_epoch"].values())
    for e in range(n):
        cells = [str(e), result["per_epoch"][methods[0]][e]["phase"]]
        for m in methods:
            r = result["per_epoch"][m][e]
            cells += [fmt(r["skip_connect"], 2), fmt(r["none"], 2), fmt(r["param_free"], 2),
                      fmt(r["alpha_entropy"], 4)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Final cells per run", "",
              "| method | seed | benchmark string | benchmark index | mean softmax weight per op at the end "
              "(none, skip, conv1x1, conv3x3, avg_pool) | last epoch's val accuracy: search net / evaluation net "
              "| wall time (s) |", "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        mass = r["final_alpha_mass"]
        mass_text = ", ".join(f"{mass[op]:.3f}" for op in OPS) if mass else "n/a"
        idx = r["final_index"] if r["final_index"] is not None else "n/a (run without --benchmark)"
        accs = " / ".join("n/a" if r[k] is None else f"{r[k]:.3f}" for k in ("final_val_acc_search",
                                                                                "final_val_acc_eval"))
        lines.append(f"| {r['method']} | {r['seed']} | `{r['final_arch']}` | {idx} | {mass_text} | {accs} "
                     f"| {r['wall_s']:.0f} |")
    lines += ["", "## CIFAR numbers of the found cells", "",
              "This run does not report the benchmark's CIFAR-10/100 or ImageNet16-120 accuracies of the found cells: "
              "those need the user's full NATS-Bench topology copy (`NATS-tss-v1_0-3ffb9-simple`, about 1 GB), which "
              "is not on this machine (only its index file and three records are). With it, "
              "`cdarts-nb201 query ARCH --benchmark DIR` on the strings above gives them.",
              "", "## What it shows", "", result.get("summary", "").strip() or "(see the tables)", "",
              "## Conditions", "",
              f"- CPU: {c['cpu']} ({c['cpu_count']} cores, shared with other work); SIMD flags: "
              f"{' '.join(c['cpu_simd_flags'])}",
              f"- load average at the start {result['load_at_start']['loadavg']}, at the end "
              f"{c['load_at_end']['loadavg']}",
              f"- torch {c['torch']}, Python {c['python']}; {c['runs_at_a_time']} searches at a time, "
              f"{c['torch_threads_per_run']} torch thread each; all searches took {result['total_wall_s']:.0f} s "
              "from the first start to the last end",
              f"- searches ran {result['date']}", ""]
    return "\n".join(lines)


def summarise(result: dict[str, Any]) -> str:
    """Plain sentences from the numbers (no judgement beyond what they show)."""
    f = result["final"]
    parts = []
    for m in result["per_epoch"]:
        rows = result["per_epoch"][m]
        first = next((r for r in rows if r["phase"] == "search"), rows[0])
        parts.append(f"{m}: parameter-free share {first['param_free'][0]:.2f} after the first search epoch, "
                     f"{f[m]['param_free'][0]:.2f} ± {f[m]['param_free'][1]:.2f} at the end "
                     f"(skip {f[m]['skip_connect'][0]:.2f}, none {f[m]['none'][0]:.2f}); alpha entropy "
                     f"{f[m]['alpha_entropy'][0]:.4f}.")
    p = result["paired_final_param_free"]
    if p:
        noise = max(p["seed_sd_cdarts"], p["seed_sd_darts"])
        verdict = ("the same in every seed (no seed spread at all)" if noise == 0 == p["sd"] else
                   f"{'more than' if abs(p['mean']) > 2 * max(p['sd'], noise) else 'within'} twice the seed "
                   f"spread ({noise:.3f})")
        parts.append(f"The paired difference in the final parameter-free share (CDARTS - DARTS) is {p['mean']:+.3f} "
                     f"± {p['sd']:.3f}, {verdict}.")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    s = dict(SETTINGS["quick" if args.quick else "default"])
    s.update({k: getattr(args, k) for k in s if getattr(args, k) is not None})
    seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if any(m not in METHODS for m in methods) or not seeds:
        raise SystemExit(f"--methods: choose from {', '.join(METHODS)}; --seeds: at least one")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nb201_drift_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        start_file = work / "load_at_start.json"  # the load when the searches in ``work`` began
        if not start_file.is_file():
            start_file.write_text(json.dumps(cpu_load()) + "\n")
        load_at_start = json.loads(start_file.read_text())
        data = work / f"digits{s['size']}"
        if not (data / "train").is_dir():  # scikit-learn's digits as train/ and val/ ImageFolders
            subprocess.run([sys.executable, str(REPO / "tools" / "prepare_digits.py"), "--out", str(data), "--size",
                            str(s["size"])], check=True, stdout=subprocess.DEVNULL)
        per_class = [sum(1 for _ in d.glob("*.png")) for d in (data / "train").iterdir() if d.is_dir()]
        n_search = {"train": sum(max(1, round(n * s["train_fraction"])) for n in per_class),
                    "val": sum(max(1, round(n * s["val_fraction"])) for n in per_class)}
        jobs = [(m, seed) for m in methods for seed in seeds]  # cdarts (slower) first
        walls = run_all(jobs, data, work, s, args.benchmark, max(1, args.parallel))
        result = analyse(jobs, work, walls)
        result.update(settings=s, seeds=seeds, load_at_start=load_at_start,
                      steps_per_epoch=(min(n_search.values()) // s["batch_size"]) if not s["max_steps"]
                      else s["max_steps"],
                      total_wall_s=searches_span(walls), script_wall_s=round(time.perf_counter() - t0, 1),
                      date=time.strftime("%Y-%m-%d ", time.gmtime()) + min(w["started"] for w in walls.values())
                      + " to " + max(w["finished"] for w in walls.values()) + " UTC",
                      conditions=conditions(s, args.parallel, n_search),
                      cifar_note="The benchmark's CIFAR/ImageNet16-120 accuracies of the found cells need the "
                                 "user's full NATS-Bench topology copy; they are not reported here.")
        result["summary"] = summarise(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / f"{args.name}.png", f"NAS-Bench-201 space on digits ({s['size']} px, C={s['width']}, "
         f"N={s['cells']}, {s['epochs']}+{s['warmup_epochs']} epochs, seeds {args.seeds}): reduced run")
    (out / f"{args.name}.md").write_text(markdown(result, args.name))
    print(result["summary"])
    print(f"wrote {out / args.name}.json, .md and .png in {result['total_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
